// probe: the test program of the end-to-end suite's running pods. It runs in a FROM scratch
// image (static, no shell) and reports what it observed as JSON in its termination message
// (/dev/termination-log, read back through the API), never a secret value: files and variables
// are described by length and SHA-256.
//
//	probe report [--env NAME,...] [--absent PATH,...] PATH...
//	                                        describe files, own ids and env; exit 0 iff every
//	                                        PATH and NAME was read and every --absent PATH is absent
//	probe watch --notify KIND --timeout S PATH
//	                                        wait until a notification shows PATH changed, exit 0;
//	                                        KIND: file:PATH (marker changes), signal (SIGHUP), http:PORT
//	probe sleep                             run until SIGTERM (a long-running app)
//	pause (argv[0] "pause")                 the pod sandbox: sleep, reap children, exit on SIGTERM
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const reportPath = "/dev/termination-log"

type fileInfo struct {
	Len    int    `json:"len,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Mode   string `json:"mode,omitempty"`
	UID    int    `json:"uid"`
	GID    int    `json:"gid"`
	Error  string `json:"error,omitempty"`
}

type report struct {
	UID      int                 `json:"uid"`
	GID      int                 `json:"gid"`
	Groups   []int               `json:"groups"`
	Files    map[string]fileInfo `json:"files,omitempty"`
	Absent   map[string]bool     `json:"absent,omitempty"`
	Env      map[string]fileInfo `json:"env,omitempty"`
	EnvNames []string            `json:"envNames,omitempty"`
	Watch    *watchResult        `json:"watch,omitempty"`
	Error    string              `json:"error,omitempty"`
}

type watchResult struct {
	Initial         string `json:"initial"`
	Final           string `json:"final"`
	Notifications   int    `json:"notifications"`
	Unchanged       int    `json:"unchanged"`
	StartedAtMs     int64  `json:"startedAtMs"`
	SeenAtMs        int64  `json:"seenAtMs"`
	TimedOut        bool   `json:"timedOut"`
	FinalLen        int    `json:"finalLen"`
	NotificationErr string `json:"notificationError,omitempty"`
}

func describe(path string) fileInfo {
	data, err := os.ReadFile(path)
	if err != nil {
		return fileInfo{Error: err.Error(), UID: -1, GID: -1}
	}
	sum := sha256.Sum256(data)
	fi := fileInfo{Len: len(data), SHA256: hex.EncodeToString(sum[:]), UID: -1, GID: -1}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err == nil {
		fi.Mode = fmt.Sprintf("%04o", st.Mode&0o7777)
		fi.UID, fi.GID = int(st.Uid), int(st.Gid)
	}
	return fi
}

func value(s string) fileInfo {
	sum := sha256.Sum256([]byte(s))
	return fileInfo{Len: len(s), SHA256: hex.EncodeToString(sum[:]), UID: -1, GID: -1}
}

func self() report {
	groups, _ := os.Getgroups()
	sort.Ints(groups)
	return report{UID: os.Getuid(), GID: os.Getgid(), Groups: groups}
}

// finish writes the report where the kubelet reads the termination message, and to stdout.
func finish(r report, code int) {
	out, _ := json.Marshal(r)
	if err := os.WriteFile(reportPath, out, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "probe: cannot write %s: %v\n", reportPath, err)
	}
	fmt.Println(string(out))
	os.Exit(code)
}

func fail(msg string) {
	r := self()
	r.Error = msg
	finish(r, 2)
}

func cmdReport(args []string) {
	r := self()
	r.Files = map[string]fileInfo{}
	var envs, absent []string
	for len(args) > 0 && strings.HasPrefix(args[0], "--") {
		if len(args) < 2 {
			fail(args[0] + " needs a comma-separated list")
		}
		switch args[0] {
		case "--env":
			envs = strings.Split(args[1], ",")
		case "--absent":
			absent = strings.Split(args[1], ",")
		default:
			fail("unknown flag " + args[0])
		}
		args = args[2:]
	}
	ok := true
	if absent != nil {
		r.Absent = map[string]bool{}
		for _, p := range absent {
			_, err := os.Lstat(p)
			r.Absent[p] = os.IsNotExist(err)
			ok = ok && r.Absent[p]
		}
	}
	for _, p := range args {
		fi := describe(p)
		if fi.Error != "" {
			ok = false
		}
		r.Files[p] = fi
	}
	if envs != nil {
		r.Env = map[string]fileInfo{}
		for _, n := range envs {
			v, found := os.LookupEnv(n)
			if !found {
				r.Env[n] = fileInfo{Error: "not set", UID: -1, GID: -1}
				ok = false
				continue
			}
			r.Env[n] = value(v)
		}
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		r.EnvNames = append(r.EnvNames, name)
	}
	sort.Strings(r.EnvNames)
	if ok {
		finish(r, 0)
	}
	finish(r, 1)
}

func hash(path string) (string, int) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "error: " + err.Error(), 0
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), len(data)
}

func cmdWatch(args []string) {
	notify, timeout := "", 120*time.Second
	for len(args) > 1 && strings.HasPrefix(args[0], "--") {
		switch args[0] {
		case "--notify":
			notify = args[1]
		case "--timeout":
			s, err := strconv.Atoi(args[1])
			if err != nil {
				fail("--timeout: " + err.Error())
			}
			timeout = time.Duration(s) * time.Second
		default:
			fail("unknown flag " + args[0])
		}
		args = args[2:]
	}
	if len(args) != 1 || notify == "" {
		fail("usage: probe watch --notify file:PATH|signal|http:PORT [--timeout S] PATH")
	}
	path := args[0]
	w := &watchResult{StartedAtMs: time.Now().UnixMilli()}
	w.Initial, _ = hash(path)
	events := make(chan struct{}, 16)
	switch {
	case strings.HasPrefix(notify, "file:"):
		marker := strings.TrimPrefix(notify, "file:")
		last, _ := hash(marker)
		go func() {
			for {
				time.Sleep(100 * time.Millisecond)
				if h, _ := hash(marker); h != last {
					last = h
					events <- struct{}{}
				}
			}
		}()
	case notify == "signal":
		ch := make(chan os.Signal, 16)
		signal.Notify(ch, syscall.SIGHUP)
		go func() {
			for range ch {
				events <- struct{}{}
			}
		}()
	case strings.HasPrefix(notify, "http:"):
		port := strings.TrimPrefix(notify, "http:")
		mux := http.NewServeMux()
		mux.HandleFunc("/reload", func(rw http.ResponseWriter, req *http.Request) {
			if req.Method != http.MethodPost {
				rw.WriteHeader(http.StatusMethodNotAllowed)
				return
			}
			events <- struct{}{}
			rw.WriteHeader(http.StatusNoContent)
		})
		go func() {
			err := http.ListenAndServe("127.0.0.1:"+port, mux)
			w.NotificationErr = err.Error()
		}()
	default:
		fail("--notify: unknown kind " + notify)
	}
	deadline := time.After(timeout)
	for {
		select {
		case <-events:
			w.Notifications++
			h, n := hash(path)
			if h == w.Initial {
				w.Unchanged++
				continue
			}
			w.Final, w.FinalLen, w.SeenAtMs = h, n, time.Now().UnixMilli()
			r := self()
			r.Watch = w
			finish(r, 0)
		case <-deadline:
			w.TimedOut = true
			w.Final, w.FinalLen = hash(path)
			r := self()
			r.Watch = w
			finish(r, 3)
		}
	}
}

// sleepUntilTerm blocks until SIGTERM or SIGINT; as PID 1 (the sandbox of a pod that shares its
// process namespace) it also reaps orphaned children.
func sleepUntilTerm() {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range ch {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}

func main() {
	if filepath.Base(os.Args[0]) == "pause" {
		sleepUntilTerm()
		return
	}
	if len(os.Args) < 2 {
		fail("usage: probe report|watch|sleep ...")
	}
	switch os.Args[1] {
	case "report":
		cmdReport(os.Args[2:])
	case "watch":
		cmdWatch(os.Args[2:])
	case "sleep":
		sleepUntilTerm()
	default:
		fail("unknown command " + os.Args[1])
	}
}
