//go:build linux

package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NATKind is the mapping behaviour of a NAT site.
type NATKind int

const (
	// Easy maps all flows from one inside address and port to the same
	// public port, the inside port when it is free (MASQUERADE).
	Easy NATKind = iota
	// Hard maps every new flow, even from the same inside address and
	// port, to a random public port (MASQUERADE --random-fully).
	Hard
)

func (k NATKind) String() string {
	switch k {
	case Easy:
		return "easy"
	case Hard:
		return "hard"
	}
	return "NATKind(" + strconv.Itoa(int(k)) + ")"
}

// DefaultUDPTimeout is the UDP conntrack timeout of a NAT site whose
// [SiteSpec.UDPTimeout] is zero.
const DefaultUDPTimeout = 30 * time.Second

// SiteSpec describes a NAT site for [NewWithNATs].
type SiteSpec struct {
	Kind   NATKind
	Inside int // number of inside hosts, at least 1
	// UDPTimeout is how long a UDP mapping outlives its last packet,
	// rounded up to whole seconds; zero means [DefaultUDPTimeout].
	UDPTimeout time.Duration
}

// Site is one NAT site of a testbed.
type Site struct {
	Kind       NATKind
	Router     string     // the NAT router's namespace name
	Public     netip.Addr // the NAT router's public address, 198.18.<p+k+1>.2
	Inside     []Host     // inside host j has address 198.19.<k+1>.<j+2>
	UDPTimeout time.Duration
}

// NewWithNATs creates a testbed with public hosts, like [New] (0 ≤ public),
// and a NAT site for each spec. Public hosts plus sites and, separately, all
// inside hosts together may number at most [MaxHosts]; there must be at
// least one public host or site. On any error NewWithNATs deletes whatever
// it created.
func NewWithNATs(prefix string, public int, specs []SiteSpec) (*Testbed, error) {
	if public < 0 || public+len(specs) < 1 || public+len(specs) > MaxHosts {
		return nil, fmt.Errorf("netns: %d public hosts and %d NAT sites: their sum must be in [1, %d]", public, len(specs), MaxHosts)
	}
	inside := 0
	for k, s := range specs {
		switch {
		case s.Kind != Easy && s.Kind != Hard:
			return nil, fmt.Errorf("netns: NAT site %d: unknown kind %v", k, s.Kind)
		case s.Inside < 1:
			return nil, fmt.Errorf("netns: NAT site %d: %d inside hosts, want at least 1", k, s.Inside)
		case s.UDPTimeout < 0:
			return nil, fmt.Errorf("netns: NAT site %d: negative UDP timeout %v", k, s.UDPTimeout)
		}
		inside += s.Inside
	}
	if inside > MaxHosts {
		return nil, fmt.Errorf("netns: %d inside hosts in all, at most %d", inside, MaxHosts)
	}
	tag, err := runTag(prefix)
	if err != nil {
		return nil, err
	}
	tb := &Testbed{router: tag + "r"}
	for i := range public {
		tb.hosts = append(tb.hosts, Host{
			Name: fmt.Sprintf("%sh%d", tag, i),
			Addr: netip.AddrFrom4([4]byte{198, 18, byte(i + 1), 2}),
		})
	}
	g := 0 // inside hosts are numbered across sites, to keep names short
	for k, s := range specs {
		timeout := s.UDPTimeout
		if timeout == 0 {
			timeout = DefaultUDPTimeout
		}
		timeout = (timeout + time.Second - 1).Truncate(time.Second)
		site := Site{
			Kind:       s.Kind,
			Router:     fmt.Sprintf("%sn%d", tag, k),
			Public:     netip.AddrFrom4([4]byte{198, 18, byte(public + k + 1), 2}),
			UDPTimeout: timeout,
		}
		for j := range s.Inside {
			site.Inside = append(site.Inside, Host{
				Name: fmt.Sprintf("%si%d", tag, g),
				Addr: netip.AddrFrom4([4]byte{198, 19, byte(k + 1), byte(j + 2)}),
			})
			g++
		}
		tb.sites = append(tb.sites, site)
	}
	if err := tb.build(); err != nil {
		return nil, errors.Join(err, tb.Close())
	}
	if err := tb.buildSites(); err != nil {
		return nil, errors.Join(err, tb.Close())
	}
	return tb, nil
}

// buildSites creates and wires up the NAT routers and inside hosts; the
// core router must exist.
func (tb *Testbed) buildSites() error {
	if len(tb.sites) == 0 {
		return nil
	}
	var add, router []string
	for k, s := range tb.sites {
		add = append(add, "netns add "+s.Router)
		for _, h := range s.Inside {
			add = append(add, "netns add "+h.Name)
		}
		router = append(router,
			fmt.Sprintf("link add n%d type veth peer name wan netns %s", k, s.Router),
			fmt.Sprintf("addr add %s/24 dev n%d", gateway(s.Public), k),
			fmt.Sprintf("link set n%d up", k))
	}
	if err := ipBatch("", add); err != nil {
		return err
	}
	if err := ipBatch(tb.router, router); err != nil {
		return err
	}
	for k, s := range tb.sites {
		if err := tb.buildSite(k, s); err != nil {
			return err
		}
	}
	return nil
}

func (tb *Testbed) buildSite(k int, s Site) error {
	lan := netip.AddrFrom4([4]byte{198, 19, byte(k + 1), 1})
	nat := []string{
		"link set lo up",
		fmt.Sprintf("addr add %s/24 dev wan", s.Public),
		"link set wan up",
		fmt.Sprintf("route add default via %s", gateway(s.Public)),
		"link add lan type bridge",
		fmt.Sprintf("addr add %s/24 dev lan", lan),
		"link set lan up",
	}
	for j, h := range s.Inside {
		nat = append(nat,
			fmt.Sprintf("link add l%d type veth peer name eth0 netns %s", j, h.Name),
			fmt.Sprintf("link set l%d master lan", j),
			fmt.Sprintf("link set l%d up", j))
	}
	if err := ipBatch(s.Router, nat); err != nil {
		return err
	}
	for _, h := range s.Inside {
		err := ipBatch(h.Name, []string{
			"link set lo up",
			fmt.Sprintf("addr add %s/24 dev eth0", h.Addr),
			"link set eth0 up",
			fmt.Sprintf("route add default via %s", lan),
		})
		if err != nil {
			return err
		}
	}
	masq := []string{"-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"}
	if s.Kind == Hard {
		masq = append(masq, "--random-fully")
	}
	established := []string{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}
	rules := [][]string{
		masq,
		append([]string{"-A", "INPUT", "-i", "wan"}, established...),
		{"-A", "INPUT", "-i", "wan", "-j", "DROP"},
		{"-A", "FORWARD", "-i", "lan", "-j", "ACCEPT"},
		append([]string{"-A", "FORWARD", "-i", "wan", "-o", "lan"}, established...),
		{"-P", "FORWARD", "DROP"},
	}
	for _, r := range rules {
		cmd := exec.Command("ip", append([]string{"netns", "exec", s.Router, "iptables", "-w"}, r...)...)
		if err := run(cmd, nil); err != nil {
			return err
		}
	}
	// The conntrack sysctls are per namespace; they are written after the
	// rules so that nf_conntrack (and with it /proc/sys/net/netfilter) is
	// certainly loaded.
	secs := strconv.Itoa(int(s.UDPTimeout / time.Second))
	return inNetns(s.Router, func() error {
		settings := []struct{ path, value string }{
			{"/proc/sys/net/ipv4/ip_forward", "1"},
			{"/proc/sys/net/netfilter/nf_conntrack_udp_timeout", secs},
			{"/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream", secs},
		}
		for _, set := range settings {
			if err := os.WriteFile(set.path, []byte(set.value+"\n"), 0); err != nil {
				return fmt.Errorf("netns: set %s to %s in NAT router %s: %w", set.path, set.value, s.Router, err)
			}
			got, err := os.ReadFile(set.path)
			if err != nil {
				return fmt.Errorf("netns: read back %s in NAT router %s: %w", set.path, s.Router, err)
			}
			if v := strings.TrimSpace(string(got)); v != set.value {
				return fmt.Errorf("netns: %s in NAT router %s is %s after writing %s", set.path, s.Router, v, set.value)
			}
		}
		return nil
	})
}

// gateway returns the core router's address on the /24 of a host or NAT
// router address a.
func gateway(a netip.Addr) netip.Addr {
	b := a.As4()
	b[3] = 1
	return netip.AddrFrom4(b)
}

// Sites returns the testbed's NAT sites; index k is site k.
func (tb *Testbed) Sites() []Site {
	sites := slices.Clone(tb.sites)
	for k := range sites {
		sites[k].Inside = slices.Clone(sites[k].Inside)
	}
	return sites
}

// siteNames lists the namespaces of all NAT sites.
func (tb *Testbed) siteNames() []string {
	var names []string
	for _, s := range tb.sites {
		names = append(names, s.Router)
		for _, h := range s.Inside {
			names = append(names, h.Name)
		}
	}
	return names
}

// own reports an error unless ns is a namespace of the testbed: its core
// router, a public host, a NAT router or an inside host.
func (tb *Testbed) own(ns string) error {
	if ns == tb.router || slices.Contains(tb.names(), ns) {
		return nil
	}
	return fmt.Errorf("netns: %q is not a namespace of this testbed", ns)
}

// CommandIn returns a command that runs name with args inside the testbed
// namespace ns (a [Host.Name], [Site.Router] or the core router). For a
// foreign namespace the command fails to start.
func (tb *Testbed) CommandIn(ns string, name string, args ...string) *exec.Cmd {
	if err := tb.own(ns); err != nil {
		cmd := exec.Command(name, args...)
		cmd.Err = err
		return cmd
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// DoIn is [Testbed.Do] for the testbed namespace ns (a [Host.Name],
// [Site.Router] or the core router), for instance an inside host.
func (tb *Testbed) DoIn(ns string, fn func() error) error {
	if err := tb.own(ns); err != nil {
		return err
	}
	return inNetns(ns, fn)
}

// ctnetlink message type that deletes conntrack entries; without
// attributes it deletes them all (linux/netfilter/nfnetlink_conntrack.h).
const ipctnlMsgCtDelete = 2

// FlushConntrack deletes every conntrack entry of NAT site k's router, so
// every mapping is forgotten at once (what `conntrack -F` does, over
// netlink, so that conntrack-tools are not needed). Packets of flows that
// were mapped are then unsolicited; outbound ones get new mappings.
func (tb *Testbed) FlushConntrack(k int) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return errors.New("netns: testbed is closed")
	}
	if k < 0 || k >= len(tb.sites) {
		return fmt.Errorf("netns: NAT site %d out of range [0, %d)", k, len(tb.sites))
	}
	ns := tb.sites[k].Router
	return inNetns(ns, func() error {
		if err := flushConntrack(); err != nil {
			return fmt.Errorf("netns: flush conntrack in %s: %w", ns, err)
		}
		return nil
	})
}

// flushConntrack sends IPCTNL_MSG_CT_DELETE for all address families to
// the calling thread's namespace and waits for the kernel's ack.
func flushConntrack() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	const seq = 1
	msg := make([]byte, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtDelete)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	// The 4-byte nfgenmsg stays zero: family AF_UNSPEC, version
	// NFNETLINK_V0, res_id 0.
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("short netlink ack")
			}
			if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
				return syscall.Errno(-errno)
			}
			return nil
		}
	}
}
