package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/peer-overlay/peer/node"
)

// Names with real processes and the CLI: a name claimed on one peer
// resolves from every other; another peer's claim is refused with the
// owner named; bad names are refused before anything is stored; the owner
// keeps the name across a restart; a release frees it for the next
// claimant at once.
func TestNamesClaimResolveRelease(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 5)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	Eventually(t, convergeTimeout, pollInterval, idealRing(c.Peers))
	owner, other := c.Peers[1], c.Peers[3]
	ownerID := mustID(t, owner)

	code, out, errOut := runPeer(t, "name", "claim", "web", "--service", "http", "--home", owner.Home, "--json")
	if code != 0 {
		t.Fatalf("claim: exit %d: %s", code, errOut)
	}
	var claimed node.NameInfo
	if err := json.Unmarshal([]byte(out), &claimed); err != nil || claimed.Owner != ownerID || claimed.Replicas < 4 {
		t.Fatalf("claim answered %s (%v)", out, err)
	}
	for _, p := range c.Peers {
		Eventually(t, 10*time.Second, pollInterval, func() error {
			code, out, errOut := runPeer(t, "name", "resolve", "web", "--home", p.Home, "--json")
			if code != 0 {
				return fmt.Errorf("%s: resolve: exit %d: %s", p.Name, code, errOut)
			}
			var r node.NameInfo
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				return err
			}
			if r.Owner != ownerID || len(r.Services) != 1 || r.Services[0] != "http" {
				return fmt.Errorf("%s resolves web to %+v", p.Name, r)
			}
			return nil
		})
	}
	code, _, errOut = runPeer(t, "name", "claim", "web", "--home", other.Home)
	if code == 0 || !strings.Contains(errOut, ownerID) {
		t.Fatalf("another peer's claim of a held name: exit %d, stderr %q; want a refusal naming %s", code, errOut, ownerID)
	}
	for _, bad := range []string{"Web", "we_b", "-web", strings.Repeat("a", 64)} {
		code, _, errOut := runPeer(t, "name", "claim", "--home", other.Home, "--", bad)
		if code == 0 || !strings.Contains(errOut, "bad name") {
			t.Errorf("claim of %q: exit %d, stderr %q", bad, code, errOut)
		}
	}

	// The owner restarts with the same home: it still holds the name and
	// lists it.
	owner.Stop()
	owner.Restart()
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	code, out, errOut = runPeer(t, "name", "list", "--home", owner.Home, "--json")
	if code != 0 || !strings.Contains(out, `"web"`) {
		t.Fatalf("list after the restart: exit %d, %s %s", code, out, errOut)
	}
	code, _, errOut = runPeer(t, "name", "claim", "web", "--home", other.Home)
	if code == 0 {
		t.Fatalf("after the owner's restart another peer took its name (stderr %q)", errOut)
	}

	code, _, errOut = runPeer(t, "name", "release", "web", "--home", owner.Home)
	if code != 0 {
		t.Fatalf("release: exit %d: %s", code, errOut)
	}
	Eventually(t, 10*time.Second, pollInterval, func() error {
		code, out, errOut := runPeer(t, "name", "claim", "web", "--home", other.Home, "--json")
		if code != 0 {
			return fmt.Errorf("claim after the release: exit %d: %s", code, errOut)
		}
		if !strings.Contains(out, mustID(t, other)) {
			return fmt.Errorf("claim after the release answered %s", out)
		}
		return nil
	})
}

func mustID(t *testing.T, p *Peer) string {
	t.Helper()
	info, err := p.IDInfo()
	if err != nil {
		t.Fatal(err)
	}
	return info.ID
}
