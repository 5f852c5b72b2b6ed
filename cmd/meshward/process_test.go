package main

import (
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envRunMain makes this test binary run meshward's main with its
// arguments instead of the tests (TestMain): serveProcess starts serve as
// a process of its own, that a test can kill, without building the
// binary.
const envRunMain = "MESHWARD_TEST_RUN_MAIN"

// serveChild is `meshward serve` running as a child process.
type serveChild struct {
	cmd  *exec.Cmd
	lw   *logWatcher // its JSON logs
	done chan struct{}
	err  error // of Wait, once done is closed
}

// serveProcess starts `meshward serve args...` as a child process (this
// test binary re-executed). It is stopped (SIGINT, then SIGKILL) when the
// test ends, unless it was killed before.
func serveProcess(t testing.TB, args ...string) *serveChild {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"serve"}, args...)...) //nolint:gosec // G204: this very test binary
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = io.Discard, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &serveChild{cmd: cmd, lw: newLogWatcher(pr), done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		_ = pw.Close()
		close(c.done)
	}()
	t.Cleanup(c.stop)
	return c
}

// kill ends the process with SIGKILL: no graceful stop, no Lease
// release, connections cut.
func (c *serveChild) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// stop asks the process to stop (SIGINT) and kills it after 15 s.
func (c *serveChild) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		c.kill()
	}
}

// rss is the process's resident memory (VmRSS) in bytes, 0 when unknown.
func (c *serveChild) rss() int64 { return procRSS(strconv.Itoa(c.cmd.Process.Pid)) }

// procRSS reads VmRSS of a process ("self" or a pid) in bytes.
func procRSS(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}
