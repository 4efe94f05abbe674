package node

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestConfigFileRoundTrip(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Bootstrap = []string{"/ip4/198.18.0.1/tcp/4001/p2p/12D3KooWGLfELiaEQAvdvfi5325RqfyfXwYiUYc3DuTjJKE66xFF"}
	cfg.Membership = "wan"
	cfg.LogLevel = "debug"
	cfg.UploadRate, cfg.DownloadRate = 4<<20, 1e6
	cfg.Operators = []string{"12D3KooWGLfELiaEQAvdvfi5325RqfyfXwYiUYc3DuTjJKE66xFF"}
	cfg.DistributeDir = "/srv/peer"
	cfg.NoUpgradeDials = true
	cfg.TestClaimPublic = true
	path := filepath.Join(t.TempDir(), ConfigFile)
	if err := os.WriteFile(path, cfg.Marshal(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cfg) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, cfg)
	}
	if text := string(cfg.Marshal()); !strings.Contains(text, `upload_rate = "4MiB/s"`) || !strings.Contains(text, `download_rate = "1MB/s"`) {
		t.Errorf("rates are not written as a user writes them:\n%s", text)
	}
	// Every setting is written out with a comment above it.
	text := string(DefaultConfig().Marshal())
	for _, key := range []string{"listen", "bootstrap", "membership", "log_level", "log_format", "max_memory_mib", "max_file_descriptors", "conn_low_water", "conn_high_water", "upload_rate", "download_rate", "count_as_public", "supernode_min_uptime_s", "no_upgrade_dials", "test_claim_public", "operators", "distribute_dir"} {
		i := strings.Index(text, "\n"+key+" = ")
		if i < 0 {
			t.Errorf("config file lacks %s", key)
			continue
		}
		if !strings.Contains(text[max(0, i-300):i], "# ") {
			t.Errorf("%s has no comment above it", key)
		}
	}
}

func TestLoadConfigRejects(t *testing.T) {
	for name, body := range map[string]string{
		"unknown key":  "lissen = []\n",
		"bad level":    "log_level = \"loud\"\n",
		"bad listen":   "listen = [\"not-a-multiaddr\"]\n",
		"bad water":    "conn_low_water = 500\nconn_high_water = 100\n",
		"not toml":     "listen = [\n",
		"bad operator": "operators = [\"not-a-peer-id\"]\n",
		"relative dir": "distribute_dir = \"out\"\n",
	} {
		path := filepath.Join(t.TempDir(), ConfigFile)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(path)
		if err == nil {
			t.Errorf("%s: loaded; want an error", name)
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
}

// A rate that does not parse is refused where the file is read, naming
// the file, the setting and the value, and saying what would do.
func TestLoadConfigBadRate(t *testing.T) {
	path := filepath.Join(t.TempDir(), ConfigFile)
	if err := os.WriteFile(path, []byte("download_rate = \"10 parsecs/s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	if err == nil {
		t.Fatal("loaded; want an error")
	}
	for _, want := range []string{path, "download_rate", `"10 parsecs/s"`, "want bytes per second such as 4MiB/s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	cfg := DefaultConfig()
	cfg.UploadRate = -1
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "upload_rate") {
		t.Errorf("a negative rate: %v", err)
	}
}

func TestParseBootstrap(t *testing.T) {
	const id = "12D3KooWGLfELiaEQAvdvfi5325RqfyfXwYiUYc3DuTjJKE66xFF"
	ai, err := ParseBootstrap("/ip4/198.18.0.1/tcp/4001/p2p/" + id)
	if err != nil || ai.ID.String() != id || len(ai.Addrs) != 1 {
		t.Fatalf("good address: %+v, %v", ai, err)
	}
	if _, err := ParseBootstrap("/ip4/198.18.0.1/tcp/4001"); !errors.Is(err, ErrBootstrapNoID) {
		t.Errorf("no /p2p/: got %v, want ErrBootstrapNoID", err)
	}
	for _, bad := range []string{"", "198.18.0.1:4001", "/ip4/198.18.0.1/tcp/4001/p2p/notanid", "/p2p/" + id} {
		if _, err := ParseBootstrap(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestConfigNATFields(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CountAsPublic = []string{"198.18.0.0/16"}
	cfg.SupernodeMinUptimeSec = 5
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ps, err := cfg.countAsPublic()
	if err != nil || len(ps) != 1 || ps[0].String() != "198.18.0.0/16" {
		t.Fatalf("count_as_public read as %v, %v", ps, err)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.CountAsPublic = []string{"198.18.0.0"} },
		func(c *Config) { c.CountAsPublic = []string{"not a range"} },
		func(c *Config) { c.SupernodeMinUptimeSec = -1 },
	} {
		c := DefaultConfig()
		bad(&c)
		err := c.Validate()
		if err == nil || !(strings.Contains(err.Error(), "count_as_public") || strings.Contains(err.Error(), "supernode_min_uptime_s")) {
			t.Errorf("%+v: %v, want an error naming the field", c, err)
		}
	}
}
