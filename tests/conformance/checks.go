package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
)

// libLogger implements the official library's logging.Logger. It keeps the library's lines in
// memory and shows them only with -v, or (errors and warnings only) when a check fails. The
// library does not log secret values; its error lines hold statuses, paths and error bodies.
type libLogger struct {
	mu      sync.Mutex
	verbose bool
	pending []string
}

func (l *libLogger) add(level, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := "[library " + level + "] " + strings.TrimSpace(msg)
	if l.verbose {
		fmt.Fprintln(os.Stderr, line)
		return
	}
	if level == "error" || level == "warn" {
		l.pending = append(l.pending, line)
		if len(l.pending) > 20 {
			l.pending = l.pending[len(l.pending)-20:]
		}
	}
}

func (l *libLogger) Info(msg string)  { l.add("info", msg) }
func (l *libLogger) Error(msg string) { l.add("error", msg) }
func (l *libLogger) Debug(msg string) { l.add("debug", msg) }
func (l *libLogger) Warn(msg string)  { l.add("warn", msg) }

func (l *libLogger) drain() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pending
	l.pending = nil
	return p
}

// checker counts checks. A check passes when its error is nil. Messages name secrets by path
// only; a value mismatch reports lengths, never values.
type checker struct {
	log    *libLogger
	passed int
	failed int
	fails  []string
}

func (c *checker) check(name string, err error) bool {
	lines := c.log.drain()
	if err == nil {
		c.passed++
		fmt.Printf("ok    %s\n", name)
		return true
	}
	c.failed++
	msg := name + ": " + strings.Join(strings.Fields(err.Error()), " ")
	c.fails = append(c.fails, msg)
	fmt.Printf("FAIL  %s\n", msg)
	for _, l := range lines {
		fmt.Printf("        %s\n", strings.Join(strings.Fields(l), " "))
	}
	return false
}

// fatal records a failed check that makes the rest of a flow pointless.
func (c *checker) fatal(name string, err error) {
	c.check(name, err)
}

// sameValue compares a returned secret value to the seed without printing either.
func sameValue(got, want string) error {
	if got == want {
		return nil
	}
	off := 0
	for off < len(got) && off < len(want) && got[off] == want[off] {
		off++
	}
	return fmt.Errorf("value differs from the seed (got %d bytes, want %d bytes, first difference at byte %d)", len(got), len(want), off)
}

func wantErrContaining(err error, subs ...string) error {
	if err == nil {
		return fmt.Errorf("expected an error containing %q, got success", subs)
	}
	for _, s := range subs {
		if strings.Contains(err.Error(), s) {
			return nil
		}
	}
	return fmt.Errorf("expected an error containing one of %q, got: %v", subs, err)
}
