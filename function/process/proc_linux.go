package process

import (
	"bufio"
	"bytes"
	endian "encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
)

// peerChecked reports that connections to a process's Runtime API are
// checked against the process (see peerIsProcess).
const peerChecked = true

// peerIsProcess reports whether the other end of c, a loopback TCP
// connection accepted on a process's Runtime API listener, is a socket
// held by the process pid or one of its descendants: the kernel's socket
// table (/proc/net/tcp) names the inode of the connecting socket, and the
// process's open files (/proc/<pid>/fd) name the inodes of its sockets.
// This is what keeps another local process, which can reach any loopback
// port, from taking the process's invocations or answering for it.
func peerIsProcess(c net.Conn, pid int) (bool, error) {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return false, errors.New("not a TCP connection")
	}
	inode, err := socketInode(remote.AddrPort(), local.AddrPort())
	if err != nil {
		return false, err
	}
	want := []byte("socket:[" + strconv.FormatUint(inode, 10) + "]")
	buf := make([]byte, 64)
	for _, p := range family(pid) {
		dir := "/proc/" + strconv.Itoa(p) + "/fd/"
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue // it exited
		}
		for _, e := range ents {
			n, err := syscall.Readlink(dir+e.Name(), buf)
			if err == nil && bytes.Equal(buf[:n], want) {
				return true, nil
			}
		}
	}
	return false, nil
}

// socketInode returns the inode of the IPv4 TCP socket whose local address
// is src and whose peer is dst, from /proc/net/tcp.
func socketInode(src, dst netip.AddrPort) (uint64, error) {
	if !src.Addr().Unmap().Is4() || !dst.Addr().Unmap().Is4() {
		return 0, errors.New("not an IPv4 connection")
	}
	wantSrc, wantDst := procNetAddr(src), procNetAddr(dst)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 10 || string(fields[1]) != wantSrc || string(fields[2]) != wantDst {
			continue
		}
		inode, err := strconv.ParseUint(string(fields[9]), 10, 64)
		if err != nil || inode == 0 {
			return 0, fmt.Errorf("/proc/net/tcp: no inode for %s -> %s", src, dst)
		}
		return inode, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("/proc/net/tcp: %w", err)
	}
	return 0, fmt.Errorf("/proc/net/tcp: no socket %s -> %s", src, dst)
}

// procNetAddr renders ap as /proc/net/tcp does: the address as a 32-bit
// word in the machine's byte order, in hex, and the port in hex.
func procNetAddr(ap netip.AddrPort) string {
	a := ap.Addr().Unmap().As4()
	var w [4]byte
	endian.NativeEndian.PutUint32(w[:], endian.BigEndian.Uint32(a[:]))
	return fmt.Sprintf("%s:%04X", bytes.ToUpper([]byte(hex.EncodeToString(w[:]))), ap.Port())
}

// family returns pid and its descendants, as far as the kernel lists each
// thread's children (/proc/<pid>/task/<tid>/children); bounded, so that a
// fork bomb cannot make it run long.
func family(pid int) []int {
	const maxFamily = 256
	out := []int{pid}
	for i := 0; i < len(out) && len(out) < maxFamily; i++ {
		dir := "/proc/" + strconv.Itoa(out[i]) + "/task/"
		tasks, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, t := range tasks {
			b, err := os.ReadFile(dir + t.Name() + "/children")
			if err != nil {
				continue
			}
			for _, f := range bytes.Fields(b) {
				if c, err := strconv.Atoi(string(f)); err == nil && len(out) < maxFamily {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// peakMemory returns the peak resident memory, in bytes, of the process pid
// and its living descendants: the sum of their VmHWM (/proc/<pid>/status).
// It is 0 when the process has exited.
func peakMemory(pid int) int64 {
	var total int64
	for _, p := range family(pid) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/status")
		if err != nil {
			continue
		}
		i := bytes.Index(b, []byte("\nVmHWM:"))
		if i < 0 {
			continue // a zombie, or a kernel thread
		}
		line := b[i+len("\nVmHWM:"):]
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j]
		}
		fields := bytes.Fields(line) // "123456 kB"
		if len(fields) == 2 && string(fields[1]) == "kB" {
			if kb, err := strconv.ParseInt(string(fields[0]), 10, 64); err == nil {
				total += kb << 10
			}
		}
	}
	return total
}
