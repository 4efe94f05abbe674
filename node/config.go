package node

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/BurntSushi/toml"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/peer-overlay/peer/internal/atomicfile"
	"github.com/peer-overlay/peer/internal/units"
)

// DefaultPort is the port number TCP and QUIC share unless told otherwise.
const DefaultPort = 4001

// Config is what a peer runs with: the config file in its home, with the
// flags of `peer run` applied on top.
type Config struct {
	// Listen holds the multiaddrs the host listens on. TCP and QUIC use
	// the same port number; a port of 0 picks one free port for both.
	Listen []string `toml:"listen"`
	// Bootstrap holds the peers to join through, each as `peer id` prints
	// it: /ip4/HOST/tcp/PORT/p2p/ID.
	Bootstrap []string `toml:"bootstrap"`
	// Membership is the failure detector's timing: "lan" or "wan".
	Membership string `toml:"membership"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// LogFormat is text or json.
	LogFormat string `toml:"log_format"`
	// MaxMemoryMiB bounds the memory the libp2p resource manager lets
	// connections and streams reserve; 0 means 1/8 of RAM, between 128
	// MiB and 1 GiB.
	MaxMemoryMiB int `toml:"max_memory_mib"`
	// MaxFileDescriptors bounds the sockets the host may hold; 0 means
	// half of the process's limit.
	MaxFileDescriptors int `toml:"max_file_descriptors"`
	// ConnLowWater and ConnHighWater: above high water the connection
	// manager trims idle connections down to low water.
	ConnLowWater  int `toml:"conn_low_water"`
	ConnHighWater int `toml:"conn_high_water"`
	// UploadRate and DownloadRate cap every swarm together; the file
	// holds them as text such as "4MiB/s", and "0" is no cap.
	UploadRate   units.Rate `toml:"upload_rate"`
	DownloadRate units.Rate `toml:"download_rate"`
	// CountAsPublic lists address ranges (CIDR) to treat as public where
	// libp2p would call them private or unroutable: for test beds in
	// 198.18.0.0/15 only. Empty (the default) changes nothing; the daemon
	// logs loudly when it is set.
	CountAsPublic []string `toml:"count_as_public"`
	// SupernodeMinUptimeSec is the uptime a peer needs before it may be
	// elected a supernode (0: 60 s). Every member of a group must use the
	// same value, or they elect different sets.
	SupernodeMinUptimeSec int `toml:"supernode_min_uptime_s"`
	// NoUpgradeDials turns off this peer's own relayed-to-direct upgrade
	// (upgradeRelayed: both ends of a circuit dialing each other's
	// addresses every second), so that only libp2p's DCUtR can move a
	// relayed pair to a direct connection. A test and diagnosis switch:
	// with it a pair that met before DCUtR could run may stay relayed for
	// good. Off (false) by default; the daemon logs loudly when it is on.
	NoUpgradeDials bool `toml:"no_upgrade_dials"`
	// TestClaimPublic makes this peer lie: its reachability advert says
	// public and dialed back whatever STUN found, as a peer behind a NAT
	// that claims a public address would. TESTS ONLY: the election must
	// refuse such a claim (no member can dial it back). Off by default;
	// the daemon logs loudly when it is on.
	TestClaimPublic bool `toml:"test_claim_public"`
	// HTTP is where the HTTP face listens (metrics, gateway, dashboard):
	// HOST:PORT, port 0 for a free one, or "off". Bound beyond loopback,
	// everything but /metrics needs the control token.
	HTTP string `toml:"http"`
	// ClusterKey is the path of a cluster key file (relative paths are
	// taken from the home). Set, it closes the group: only peers holding
	// one of its keys may join, and only members are served. Empty (the
	// default): an open group.
	ClusterKey string `toml:"cluster_key"`
	// Operators lists the peer IDs whose distribution orders (`peer
	// distribute`) this peer carries out; in a closed group any member
	// may order too. Empty: only a closed group's members.
	Operators []string `toml:"operators"`
	// DistributeDir is where ordered downloads go ("": <home>/distributed).
	DistributeDir string `toml:"distribute_dir"`
}

// operatorIDs reads Operators.
func (c Config) operatorIDs() ([]peer.ID, error) {
	out := make([]peer.ID, 0, len(c.Operators))
	for _, s := range c.Operators {
		id, err := peer.Decode(s)
		if err != nil {
			return nil, fmt.Errorf("config: operators %q: not a peer ID (as `peer id` prints it): %v", s, err)
		}
		out = append(out, id)
	}
	return out, nil
}

// countAsPublic reads CountAsPublic.
func (c Config) countAsPublic() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.CountAsPublic {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("config: count_as_public %q: want a range such as 198.18.0.0/16: %v", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// natUploadBps is the upload cap a supernode candidate advertises.
func (c Config) natUploadBps() int64 { return int64(c.UploadRate) }

// DefaultConfig is what `peer init` writes out.
func DefaultConfig() Config {
	return Config{
		// IPv4 on every interface; add /ip6/::/tcp/4001 and
		// /ip6/::/udp/4001/quic-v1 for IPv6.
		Listen: []string{
			fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultPort),
			fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultPort),
		},
		// A first peer has no one to join; others name it here or by flag.
		Bootstrap: []string{},
		// LAN timing finds a failed peer in seconds; WAN timing waits
		// longer before suspecting a peer on a slow link.
		Membership: "lan",
		LogLevel:   "info",
		LogFormat:  "text",
		// 0: sized from the machine at start.
		MaxMemoryMiB:       0,
		MaxFileDescriptors: 0,
		// A RON group is capped at 64 members and every member keeps a
		// connection to each; these leave room for the DHT and swarms.
		ConnLowWater:  300,
		ConnHighWater: 400,
		UploadRate:    0,
		DownloadRate:  0,
		// Nothing counts as public beyond what libp2p says.
		CountAsPublic: []string{},
		// Loopback only, on a free port: `peer dashboard` prints it.
		HTTP:      "127.0.0.1:0",
		Operators: []string{},
	}
}

// Validate checks every field and names the first one that is wrong.
func (c Config) Validate() error {
	if len(c.Listen) == 0 {
		return errors.New("config: listen: at least one address is needed")
	}
	for _, s := range c.Listen {
		if _, err := ma.NewMultiaddr(s); err != nil {
			return fmt.Errorf("config: listen %q: %v", s, err)
		}
	}
	for _, s := range c.Bootstrap {
		if _, err := ParseBootstrap(s); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	switch c.Membership {
	case "lan", "wan":
	default:
		return fmt.Errorf("config: membership %q: want \"lan\" or \"wan\"", c.Membership)
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("config: log_format %q: want text or json", c.LogFormat)
	}
	if c.MaxMemoryMiB < 0 {
		return fmt.Errorf("config: max_memory_mib %d: must be 0 (auto) or positive", c.MaxMemoryMiB)
	}
	if c.MaxFileDescriptors < 0 {
		return fmt.Errorf("config: max_file_descriptors %d: must be 0 (auto) or positive", c.MaxFileDescriptors)
	}
	// The rates were read when the file or the flags were; only a value
	// set in code can be out of range.
	if !(c.UploadRate >= 0) {
		return fmt.Errorf("config: upload_rate %v: must be 0 (no cap) or positive", c.UploadRate)
	}
	if !(c.DownloadRate >= 0) {
		return fmt.Errorf("config: download_rate %v: must be 0 (no cap) or positive", c.DownloadRate)
	}
	if _, err := c.countAsPublic(); err != nil {
		return err
	}
	if c.SupernodeMinUptimeSec < 0 {
		return fmt.Errorf("config: supernode_min_uptime_s %d: must be 0 (60 s) or positive", c.SupernodeMinUptimeSec)
	}
	if err := checkHTTPAddr(c.HTTP); err != nil {
		return err
	}
	if c.ClusterKey != "" && strings.TrimSpace(c.ClusterKey) == "" {
		return errors.New("config: cluster_key: blank; give the path of a key file, or leave it empty for an open group")
	}
	if c.ClusterKey != "" && filepath.IsAbs(c.ClusterKey) {
		// A relative path is read at start, from the home.
		if _, _, err := LoadClusterKeys(c.ClusterKey); err != nil {
			return fmt.Errorf("config: cluster_key: %w", err)
		}
	}
	if _, err := c.operatorIDs(); err != nil {
		return err
	}
	if c.DistributeDir != "" && !filepath.IsAbs(c.DistributeDir) {
		return fmt.Errorf("config: distribute_dir %q: want an absolute path, or \"\" for <home>/distributed", c.DistributeDir)
	}
	if c.ConnLowWater <= 0 || c.ConnHighWater < c.ConnLowWater {
		return fmt.Errorf("config: conn_low_water %d and conn_high_water %d: want 0 < low <= high", c.ConnLowWater, c.ConnHighWater)
	}
	return nil
}

// ErrBootstrapNoID is returned for a bootstrap address that does not end in
// /p2p/<peer id>.
var ErrBootstrapNoID = errors.New("a bootstrap address must end in /p2p/<peer id>, as `peer id` prints it")

// ParseBootstrap reads a bootstrap address such as
// /ip4/198.18.0.1/tcp/4001/p2p/12D3Koo....
func ParseBootstrap(s string) (peer.AddrInfo, error) {
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("bootstrap %q: not a multiaddr: %v", s, err)
	}
	if _, err := a.ValueForProtocol(ma.P_P2P); err != nil {
		return peer.AddrInfo{}, fmt.Errorf("bootstrap %q: %w", s, ErrBootstrapNoID)
	}
	ai, err := peer.AddrInfoFromP2pAddr(a)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("bootstrap %q: %v", s, err)
	}
	if len(ai.Addrs) == 0 {
		return peer.AddrInfo{}, fmt.Errorf("bootstrap %q: no transport address before /p2p/ (want /ip4/HOST/tcp/PORT/p2p/ID)", s)
	}
	return *ai, nil
}

// LoadConfig reads a config file. Fields it does not set keep their
// defaults; unknown fields are an error, so a typo is not silently ignored.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	md, err := toml.DecodeFile(path, &cfg)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if undec := md.Undecoded(); len(undec) > 0 {
		return Config{}, fmt.Errorf("config %s: unknown setting %q", path, undec[0].String())
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

var configTemplate = template.Must(template.New("config").Funcs(template.FuncMap{
	"list": tomlList,
	"q":    tomlString,
}).Parse(`# peer configuration. Flags given to "peer run" override these settings.

# Multiaddrs to listen on. TCP and QUIC share one port number; port 0 picks
# a free port for both. Add /ip6/::/tcp/PORT and /ip6/::/udp/PORT/quic-v1
# for IPv6.
listen = {{list .Listen}}

# Peers to join through, each as "peer id" prints it:
# "/ip4/HOST/tcp/PORT/p2p/ID". Any running peer will do. Empty: this peer
# starts a group of its own and others join it.
bootstrap = {{list .Bootstrap}}

# Failure detector timing: "lan" notices a failed peer within seconds;
# "wan" waits longer before suspecting a peer on a slow or lossy link.
membership = {{q .Membership}}

# Logging: log_level is debug, info, warn or error; log_format is text or json.
log_level = {{q .LogLevel}}
log_format = {{q .LogFormat}}

# Resource manager: memory that connections and streams may reserve, in
# MiB (0: 1/8 of RAM, between 128 MiB and 1 GiB), and sockets the host may
# hold (0: half of the process's file limit).
max_memory_mib = {{.MaxMemoryMiB}}
max_file_descriptors = {{.MaxFileDescriptors}}

# Connection manager: above high water, idle connections are trimmed down
# to low water.
conn_low_water = {{.ConnLowWater}}
conn_high_water = {{.ConnHighWater}}

# Swarm rate limits for all files together, such as "4MiB/s" or "500KB/s";
# "0" is no limit. "peer share" and "peer get" can cap one file further.
upload_rate = {{q .UploadRate.String}}
download_rate = {{q .DownloadRate.String}}

# NAT traversal. count_as_public makes address ranges count as public
# where libp2p would not (only for test beds in 198.18.0.0/15, such as
# ["198.18.0.0/16"]); supernode_min_uptime_s is the uptime before a peer may
# be elected a supernode (0: 60 s; the same on every member).
count_as_public = {{list .CountAsPublic}}
supernode_min_uptime_s = {{.SupernodeMinUptimeSec}}
# no_upgrade_dials (TEST AND DIAGNOSIS ONLY) stops this peer's own direct
# dials over relayed pairs, leaving the upgrade to DCUtR alone.
no_upgrade_dials = {{.NoUpgradeDials}}
# test_claim_public (TESTS ONLY) makes this peer claim a public address it
# may not have, to test that the group refuses to elect it.
test_claim_public = {{.TestClaimPublic}}

# The HTTP face: Prometheus metrics at /metrics, the swarm gateway at
# /swarm/INFOHASH/PATH and a dashboard at /. HOST:PORT (port 0 picks a free
# one; "peer dashboard" prints the address) or "off". Bound beyond
# loopback, everything but /metrics needs the control token.
http = {{q .HTTP}}
# Closed group: the path of a cluster key file (relative to this home), made
# with "peer keygen FILE": one base64 32-byte key per line, the first used
# to encrypt, all accepted. Only peers holding a key may join, and only
# members are served. Empty: an open group.
cluster_key = {{q .ClusterKey}}

# Distribution ("peer distribute"): operators lists the peer IDs whose
# orders to fetch a file this peer carries out (in a closed group any
# member may order too); orders from anyone else are refused.
# distribute_dir is where ordered files go ("": <home>/distributed).
operators = {{list .Operators}}
distribute_dir = {{q .DistributeDir}}
`))

// Marshal writes the config as a commented TOML file.
func (c Config) Marshal() []byte {
	var b bytes.Buffer
	if err := configTemplate.Execute(&b, c); err != nil {
		panic(err) // the template and its inputs are ours
	}
	return b.Bytes()
}

func tomlString(s string) string {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(map[string]string{"v": s}); err != nil {
		panic(err)
	}
	return strings.TrimSpace(strings.TrimPrefix(b.String(), "v = "))
}

func tomlList(xs []string) string {
	if len(xs) == 0 {
		return "[]"
	}
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = "  " + tomlString(x) + ","
	}
	return "[\n" + strings.Join(parts, "\n") + "\n]"
}

// writeFileAtomic replaces path with data, flushed to disk first (see
// atomicfile.Write).
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	return atomicfile.Write(path, data, mode)
}
