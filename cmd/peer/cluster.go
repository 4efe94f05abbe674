package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/overlay"
)

func newKeygenCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "keygen [FILE]",
		Short: "Make a new cluster key: a key file (mode 0600) for a closed group, or one key on stdout",
		Long: `Make a new random cluster key. With FILE, write a new key file (mode 0600;
an existing file is never replaced) to give to "peer init --cluster-key" or
the config's cluster_key on every member. Without FILE, print one key (base64
of 32 bytes) for "peer cluster-key add" when rotating keys.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				k := node.EncodeClusterKey(node.NewClusterKey())
				if g.json {
					return printJSON(map[string]string{"key": k})
				}
				fmt.Println(k)
				return nil
			}
			path, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if err := node.WriteNewClusterKeyFile(path); err != nil {
				return err
			}
			keys, _, err := node.LoadClusterKeys(path)
			if err != nil {
				return err
			}
			fp := overlay.KeyFingerprint(keys[0])
			if g.json {
				return printJSON(map[string]string{"file": path, "fingerprint": fp})
			}
			fmt.Printf("wrote %s (key %s); give every member of the group a copy\n", path, fp)
			return nil
		},
	}
}

func newClusterKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster-key",
		Short: "List or rotate the running peer's cluster keys (closed groups)",
		Long: `List or change the cluster keys of the running peer. Changes apply to the
live group at once and are written to the key file. To rotate without
downtime: "add" the new key on every member, then "use" it on every member,
then "remove" the old one on every member.`,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the installed keys by fingerprint (never the keys)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			info, err := c.ClusterKeys(cmd.Context())
			if err != nil {
				return err
			}
			return printClusterKeys(info, g.json)
		},
	}
	cmd.AddCommand(list)
	for _, op := range []struct{ name, short string }{
		{"add", "Install KEY beside the others: accepted at once, used to encrypt only after \"use\""},
		{"use", "Make the installed KEY (or its sha256: fingerprint) the primary, used to encrypt"},
		{"remove", "Remove the installed KEY (or its sha256: fingerprint); the primary cannot be removed"},
	} {
		var from string
		c := &cobra.Command{
			Use:   op.name + " [KEY]",
			Short: op.short,
			Args:  cobra.MaximumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				key, err := keyArg(args, from)
				if err != nil {
					return err
				}
				c, err := g.client()
				if err != nil {
					return err
				}
				info, err := c.ChangeClusterKey(cmd.Context(), op.name, key)
				if err != nil {
					return err
				}
				return printClusterKeys(info, g.json)
			},
		}
		c.Flags().StringVar(&from, "from", "", "read the key from the first line of this key file instead of the command line")
		cmd.AddCommand(c)
	}
	return cmd
}

// keyArg is the key given on the command line or, with --from, the
// primary of a key file (which keeps it out of the process list).
func keyArg(args []string, from string) (string, error) {
	switch {
	case from != "" && len(args) > 0:
		return "", usageError{fmt.Errorf("give KEY or --from FILE, not both")}
	case from != "":
		keys, _, err := node.LoadClusterKeys(from)
		if err != nil {
			return "", err
		}
		return node.EncodeClusterKey(keys[0]), nil
	case len(args) == 1:
		return args[0], nil
	}
	return "", usageError{fmt.Errorf("give KEY (base64, as `peer keygen` prints it) or --from FILE")}
}

func printClusterKeys(info node.ClusterKeysInfo, asJSON bool) error {
	if asJSON {
		return printJSON(info)
	}
	fmt.Printf("group  %s\n", info.Group)
	if info.File != "" {
		fmt.Printf("file   %s\n", info.File)
	}
	for _, k := range info.Keys {
		mark := ""
		if k.Primary {
			mark = "  (primary)"
		}
		fmt.Printf("key    %s%s\n", k.Fingerprint, mark)
	}
	if info.Group == "open" {
		fmt.Fprintln(os.Stderr, "an open group has no keys; set cluster_key in the config and restart to close it")
	}
	return nil
}
