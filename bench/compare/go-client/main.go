// Command go-client is what a user of BeyondTrust's official Go library
// (github.com/BeyondTrust/go-client-library-passwordsafe) writes to do ps-agent's job: sign in
// with an API key, fetch secrets and managed-account passwords, write one file each, sign out.
// bench/compare/run measures it beside ps-agent against the same emulator.
//
//	go-client -api-url https://127.0.0.1:PORT/BeyondTrust/api/public/v3 -root DIR \
//	    -secret NAME=safe/folder/title ... -account NAME=system/account ...
//
// The API key and run-as user come from PS_API_KEY and PS_RUNAS; the CA from the system pool
// (SSL_CERT_FILE): verification stays on. Each file is written to a temporary name and renamed,
// so a reader never sees half a value. Exit status 1 when anything failed. Values are never
// printed.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/BeyondTrust/go-client-library-passwordsafe/api/authentication"
	managed_accounts "github.com/BeyondTrust/go-client-library-passwordsafe/api/managed_account"
	"github.com/BeyondTrust/go-client-library-passwordsafe/api/secrets"
	"github.com/BeyondTrust/go-client-library-passwordsafe/api/utils"
	backoff "github.com/cenkalti/backoff/v4"
)

// quiet implements the library's logging.Logger; only errors reach stderr.
type quiet struct{}

func (quiet) Info(string)    {}
func (quiet) Debug(string)   {}
func (quiet) Warn(string)    {}
func (quiet) Error(m string) { fmt.Fprintln(os.Stderr, "library error:", m) }

type pairs []string

func (p *pairs) String() string     { return strings.Join(*p, ",") }
func (p *pairs) Set(v string) error { *p = append(*p, v); return nil }

// split parses NAME=PATH.
func split(v string) (string, string) {
	name, path, ok := strings.Cut(v, "=")
	if !ok || name == "" || path == "" {
		fmt.Fprintf(os.Stderr, "go-client: %q is not NAME=PATH\n", v)
		os.Exit(2)
	}
	return name, path
}

func write(root, name, value string) error {
	tmp := filepath.Join(root, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(value), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(root, name))
}

func main() {
	apiURL := flag.String("api-url", "", "Password Safe API base URL")
	root := flag.String("root", "", "directory the files are written to")
	var secretArgs, accountArgs pairs
	flag.Var(&secretArgs, "secret", "NAME=safe/folder/title (repeatable)")
	flag.Var(&accountArgs, "account", "NAME=system/account (repeatable)")
	flag.Parse()
	key, runas := os.Getenv("PS_API_KEY"), os.Getenv("PS_RUNAS")
	if *apiURL == "" || *root == "" || key == "" || runas == "" {
		fmt.Fprintln(os.Stderr, "go-client: -api-url, -root, PS_API_KEY and PS_RUNAS are required")
		os.Exit(2)
	}
	if err := os.MkdirAll(*root, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "go-client:", err)
		os.Exit(1)
	}
	log := quiet{}
	hc, err := utils.GetHttpClient(30, true, "", "", log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-client: http client:", err)
		os.Exit(1)
	}
	auth, err := authentication.AuthenticateUsingApiKey(authentication.AuthenticationParametersObj{
		HTTPClient:                 *hc,
		BackoffDefinition:          backoff.NewExponentialBackOff(),
		EndpointURL:                *apiURL,
		APIVersion:                 "3.1",
		ApiKey:                     key + ";runas=" + runas + ";",
		Logger:                     log,
		RetryMaxElapsedTimeSeconds: 30,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-client: authentication:", err)
		os.Exit(1)
	}
	if _, err := auth.GetPasswordSafeAuthentication(); err != nil {
		fmt.Fprintln(os.Stderr, "go-client: sign-in:", err)
		os.Exit(1)
	}
	failed := false
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "go-client: %s: %v\n", what, err)
		failed = true
	}

	// The library's batch call: one GET per secret, in order.
	if len(secretArgs) > 0 {
		so, _ := secrets.NewSecretObj(*auth, log, 4000, true)
		names := map[string]string{}
		var paths []string
		for _, a := range secretArgs {
			name, path := split(a)
			names[path] = name
			paths = append(paths, path)
		}
		got, err := so.GetSecrets(paths, "/")
		if err != nil {
			fail("secrets", err)
		}
		for path, name := range names {
			if v, ok := got[path]; ok {
				if err := write(*root, name, v); err != nil {
					fail("write "+name, err)
				}
			} else {
				fail(name, fmt.Errorf("%s not returned", path))
			}
		}
	}
	// Managed accounts: lookup, request, credentials, check-in, each account in turn.
	if len(accountArgs) > 0 {
		mo, _ := managed_accounts.NewManagedAccountObj(*auth, log)
		for _, a := range accountArgs {
			name, path := split(a)
			v, err := mo.GetSecret(path, "/")
			if err != nil {
				fail(name, err)
				continue
			}
			if err := write(*root, name, v); err != nil {
				fail("write "+name, err)
			}
		}
	}
	if err := auth.SignOut(); err != nil {
		fail("sign-out", err)
	}
	if failed {
		os.Exit(1)
	}
}
