package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRotation(t *testing.T) {
	zero, three := 0, 3
	tests := []struct {
		name      string
		maxFiles  *int
		wantFiles int // rotated files left; -1: more than 3
		wantAll   bool
	}{
		{name: "maxFiles 3 keeps 3 rotated files", maxFiles: &three, wantFiles: 3},
		{name: "maxFiles 0 keeps every file", maxFiles: &zero, wantFiles: -1, wantAll: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tempLog(t)
			cfg := Config{BatchSize: 1, Sinks: []SinkConfig{{Type: "file", Path: path, MaxFiles: tc.maxFiles}}}
			l := start(t, cfg, withMaxBytes(2048))
			const n = 100
			for i := range n {
				if err := l.Audit(decision(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.stop(); err != nil {
				t.Fatal(err)
			}
			rotated, err := RotatedFiles(path)
			if err != nil {
				t.Fatal(err)
			}
			if (tc.wantFiles >= 0 && len(rotated) != tc.wantFiles) || (tc.wantFiles < 0 && len(rotated) <= 3) {
				t.Fatalf("%d rotated files, want %d", len(rotated), tc.wantFiles)
			}
			for _, f := range append(rotated, path) {
				fi, err := os.Stat(f)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Size() > 2048 || fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: size %d mode %v", f, fi.Size(), fi.Mode().Perm())
				}
			}
			s, err := VerifyFiles(append(rotated, path)...)
			if err != nil {
				t.Fatalf("Verify: %v %v", err, s.Problems)
			}
			if tc.wantAll != (s.Records == n) {
				t.Errorf("records kept = %d of %d", s.Records, n)
			}
		})
	}
}

func TestPruneByAge(t *testing.T) {
	path := tempLog(t)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	old := path + ".20220101T000000.000000000Z"    // 8 years before now
	recent := path + ".20250101T000000.000000000Z" // 5 years before now
	other := path + ".notes"                       // not a rotated file
	for f, age := range map[string]time.Time{old: now.AddDate(-8, 0, 0), recent: now.AddDate(-5, 0, 0), other: now.AddDate(-9, 0, 0)} {
		if err := os.WriteFile(f, []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f, age, age); err != nil {
			t.Fatal(err)
		}
	}
	var cfg Config
	if err := yamlDecode("sinks: [{type: file, path: "+path+", maxFiles: 0, maxAge: 2557d}]", &cfg); err != nil {
		t.Fatal(err)
	}
	l := start(t, cfg, WithClock(func() time.Time { return now }))
	l.waitReady(t, nil)
	l.stop()
	for f, want := range map[string]bool{old: false, recent: true, other: true} {
		if _, err := os.Stat(f); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", filepath.Base(f), err == nil, want)
		}
	}
}

// TestTornTailRepaired: a file whose last line was cut by a crash gets the
// fragment removed at start, so that every line stays a whole record.
func TestTornTailRepaired(t *testing.T) {
	path := tempLog(t)
	prev := `{"kind":"decision","time":"2026-01-01T00:00:00Z","seq":1,"process":"p1","decision":"allow"}` + "\n" +
		`{"kind":"decision","time":"2026-01-01T00:00:01Z","seq":2,"process":"p1","deci`
	if err := os.WriteFile(path, []byte(prev), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := VerifyFiles(path); err == nil || !s.TornTail || s.ProblemCount != 1 {
		t.Fatalf("before repair: Verify = %+v, %v; want one problem, a torn tail", s, err)
	}
	reg := prometheus.NewRegistry()
	l := start(t, fileConfig(path), WithRegisterer(reg))
	if err := l.Audit(decision(1)); err != nil {
		t.Fatal(err)
	}
	l.stop()
	s, err := VerifyFiles(path)
	if err != nil || s.Records != 2 || s.Processes != 2 {
		t.Fatalf("after repair: Verify = %+v, %v", s, err)
	}
	if n := metricValue(t, reg, "meshward_audit_records_lost_total", "reason", LostTornTail); n != 1 {
		t.Errorf("lost{torn_tail} = %v, want 1", n)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

const killChildEnv = "MESHWARD_AUDIT_KILL_CHILD"

// killChild writes records as fast as it can until it is killed.
func killChild() {
	path := os.Getenv(killChildEnv)
	cfg := fileConfig(path)
	cfg.Sinks[0].Fsync = FsyncNever
	l, err := New(cfg, WithHMACKey(testKey), WithSealKey(sealKey), WithEncryptionKey(encKey))
	if err != nil {
		os.Exit(3)
	}
	go l.Run(context.Background())
	pad := strings.Repeat("p", 9000)
	for i := 0; ; i++ {
		r := decision(i)
		// Lines of varied length, some longer than a page, so that writes
		// straddle page boundaries.
		r.Headers = map[string]string{"x-pad": pad[:i*131%len(pad)]}
		if err := l.Audit(r); err != nil {
			runtime.Gosched()
		}
	}
}

// TestKill9 kills a process writing at full speed (chained, sealed and
// encrypted), several times, and checks the promise: after a kill -9
// every line is a whole record except possibly the last (which Verify
// flags), and the chain verifies up to it; the next start removes that
// fragment and continues the chain, so the file then holds only whole
// records with no gap and ends with a final seal.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	sv, err := NewSealVerifier(SealHMAC, sealKey)
	if err != nil {
		t.Fatal(err)
	}
	vopts := VerifyOptions{Seal: sv, EncryptionKey: encKey}
	path := tempLog(t)
	const rounds = 3
	torn := 0
	for round := range rounds {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestKill9$")
		cmd.Env = append(os.Environ(), killChildEnv+"="+path)
		var before int64
		if fi, err := os.Stat(path); err == nil {
			before = fi.Size()
		}
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		for {
			fi, err := os.Stat(path)
			if err == nil && fi.Size() > before+4<<20 {
				break
			}
			if ctx.Err() != nil {
				cmd.Process.Kill()
				cmd.Wait()
				cancel()
				t.Fatalf("round %d: the child did not write 4 MiB", round)
			}
			time.Sleep(time.Millisecond)
		}
		if err := cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		err := cmd.Wait()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != -1 {
			t.Fatalf("round %d: child ended with %v, want killed", round, err)
		}
		s, err := VerifyFilesWith(vopts, path)
		if s == nil {
			t.Fatalf("round %d: Verify: %v", round, err)
		}
		// A kill may leave one torn last line and an end without a final
		// seal (when the last seal is old), and nothing else.
		for _, p := range s.Problems {
			if !strings.Contains(p, "torn last line") && !strings.Contains(p, "without a final seal") {
				t.Fatalf("round %d: Verify: %v %v", round, err, s.Problems)
			}
		}
		if s.Encrypted == 0 || s.Unreadable > 0 {
			t.Fatalf("round %d: %d records decrypted, %d unreadable", round, s.Encrypted, s.Unreadable)
		}
		if s.TornTail {
			torn++
		}
		if s.Processes != round+1 {
			t.Errorf("round %d: %d processes, want %d", round, s.Processes, round+1)
		}
	}
	// A last start removes a torn tail; then the whole file is clean, and
	// each killed process shows as one that ended without a final seal.
	l := start(t, fileConfig(path), WithSealKey(sealKey), WithEncryptionKey(encKey))
	if err := l.Audit(decision(0)); err != nil {
		t.Fatal(err)
	}
	l.stop()
	s, err := VerifyFilesWith(vopts, path)
	if err != nil {
		t.Fatalf("final Verify: %v %v", err, s.Problems)
	}
	if !s.Complete || !s.SealsChecked || len(s.Warnings) != rounds {
		t.Errorf("final Verify: complete %v, seals checked %v, warnings %q", s.Complete, s.SealsChecked, s.Warnings)
	}
	t.Logf("%d records from %d processes; %d of %d kills left a torn last line", s.Records, s.Processes, torn, rounds)
}

func TestVerify(t *testing.T) {
	line := func(seq int, proc, decision, principal, reason string) string {
		return `{"kind":"decision","time":"2026-01-01T00:00:00Z","seq":` + strconv.Itoa(seq) + `,"process":"` + proc +
			`","decision":"` + decision + `","principal":"` + principal + `","reason":"` + reason + `"}` + "\n"
	}
	good := line(7, "a", "allow", "p1", "") + line(8, "a", "deny", "p2", "missing_role") +
		line(1, "b", "deny", "p2", "missing_role") + line(9, "a", "deny", "p3", "schema") +
		`{"kind":"xds_nack","time":"2026-01-01T00:00:00Z","seq":2,"process":"b","reason":"bad_listener"}` + "\n" +
		`{"kind":"authn_failure","time":"2026-01-01T00:00:00Z","seq":3,"process":"b","decision":"deny","reason":"no_identity"}` + "\n"
	tests := []struct {
		name     string
		in       string
		problems []string
		torn     bool
	}{
		{name: "good log", in: good},
		{name: "empty log", in: ""},
		{name: "gap", in: line(1, "a", "allow", "", "") + line(3, "a", "allow", "", ""), problems: []string{"gap: seq 3 after 1 (1 records missing)"}},
		{name: "repeat", in: line(2, "a", "allow", "", "") + line(2, "a", "allow", "", ""), problems: []string{"seq 2 repeats"}},
		{name: "torn line mid-file", in: line(1, "a", "allow", "", "") + `{"kind":"deci` + "\n" + line(2, "a", "allow", "", ""), problems: []string{":2: not a JSON record"}},
		{name: "torn last line", in: line(1, "a", "allow", "", "") + `{"kind":"deci`, problems: []string{"torn last line"}, torn: true},
		{name: "no seq", in: `{"kind":"decision","time":"2026-01-01T00:00:00Z","process":"a"}` + "\n", problems: []string{"no process or seq"}},
		{name: "no kind", in: `{"time":"2026-01-01T00:00:00Z","seq":1,"process":"a"}` + "\n", problems: []string{"no kind"}},
		{name: "not an object", in: "[1,2]\n", problems: []string{"not a JSON record"}},
		{name: "empty line", in: "\n", problems: []string{"empty line"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Verify(strings.NewReader(tc.in))
			if (err != nil) != (len(tc.problems) > 0) || (err != nil && !errors.Is(err, ErrInvalidLog)) {
				t.Fatalf("Verify error = %v, want problems %v", err, tc.problems)
			}
			if s.ProblemCount != len(tc.problems) || s.TornTail != tc.torn {
				t.Fatalf("problems %v torn %v, want %v torn %v", s.Problems, s.TornTail, tc.problems, tc.torn)
			}
			for i, p := range tc.problems {
				if !strings.Contains(s.Problems[i], p) {
					t.Errorf("problem %q does not contain %q", s.Problems[i], p)
				}
			}
		})
	}
	s, _ := Verify(strings.NewReader(good))
	// The authn_failure record is a decision too: denies of every kind count.
	if s.Records != 6 || s.Processes != 2 || s.Decisions["deny"] != 4 || s.Kinds[KindXDSNack] != 1 {
		t.Errorf("summary %+v", s)
	}
	if len(s.TopDenied) == 0 || s.TopDenied[0] != (Count{"p2", 2}) || s.TopReasons[0] != (Count{"missing_role", 2}) {
		t.Errorf("top denied %v, top reasons %v", s.TopDenied, s.TopReasons)
	}
	long := bytes.Repeat([]byte("x"), MaxLineSize+10)
	s, err := Verify(bytes.NewReader(append(long, '\n')))
	if err == nil || !strings.Contains(s.Problems[0], "longer than") {
		t.Errorf("a long line: %v %v", err, s)
	}
}

// FuzzVerify: Verify never panics and counts every line.
func FuzzVerify(f *testing.F) {
	f.Add([]byte(`{"kind":"decision","time":"2026-01-01T00:00:00Z","seq":1,"process":"a"}` + "\n"))
	f.Add([]byte("{\"kind\":\n\n[]\x00"))
	f.Add([]byte(`{"meta":"segment","time":"2026-01-01T00:00:00Z","process":"a","head":"","open":"start","every":"10s"}` + "\n" +
		`{"kind":"decision","time":"2026-01-01T00:00:00Z","seq":1,"process":"a"}` + "\n" +
		`{"meta":"seal","time":"2026-01-01T00:00:00Z","process":"a","head":"00","end":"close","sig":"zz"}` + "\n"))
	f.Add([]byte(`{"meta":"segment","time":"2026-01-01T00:00:00Z","process":"a","head":"","enc":"aes-256-gcm","key_id":"x","salt":"00"}` + "\nAAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Verify(bytes.NewReader(data))
		if s == nil {
			t.Fatalf("no summary: %v", err)
		}
		if want := bytes.Count(data, []byte("\n")); s.Lines < want || s.Lines > want+1 {
			t.Errorf("%d lines counted, input has %d newlines", s.Lines, want)
		}
		if (err == nil) != (s.ProblemCount == 0) || s.Records > s.Lines {
			t.Errorf("err %v with %d problems, %d records of %d lines", err, s.ProblemCount, s.Records, s.Lines)
		}
	})
}
