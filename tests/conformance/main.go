// Command conformance drives BeyondTrust's official Go client library
// (github.com/BeyondTrust/go-client-library-passwordsafe) against a running ps-emulator and
// asserts every value it returns against the emulator's seed file.
//
// Usage: conformance -api-url https://127.0.0.1:PORT/BeyondTrust/api/public/v3 -seed seed.yaml
//
// The emulator's CA must be trusted through the system pool (SSL_CERT_FILE=<ca.pem>): the
// library is used with verifyCA=true, as in production. The last line printed is
// "N passed, M failed"; the exit status is 1 when any check failed, 2 on a usage or seed error.
// Secret values are never printed, only paths and names.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
)

const sep = "/"

type env struct {
	c      *checker
	log    *libLogger
	seed   *Seed
	apiURL string
	origin string
	// managed-account releases seen so far, for rotate_on_checkin expectations
	released map[string]int
	lastSeen map[string]string
}

func main() {
	apiURL := flag.String("api-url", "", "Password Safe API base URL, e.g. https://127.0.0.1:PORT/BeyondTrust/api/public/v3")
	seedPath := flag.String("seed", "seed.yaml", "emulator seed file the values are checked against")
	verbose := flag.Bool("v", false, "print the library's own log lines (no secret values)")
	flag.Parse()

	if *apiURL == "" {
		fmt.Fprintln(os.Stderr, "conformance: -api-url is required")
		os.Exit(2)
	}
	u, err := url.Parse(*apiURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		fmt.Fprintf(os.Stderr, "conformance: bad -api-url %q\n", *apiURL)
		os.Exit(2)
	}
	seed, err := loadSeed(*seedPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "conformance: %v\n", err)
		os.Exit(2)
	}
	log := &libLogger{verbose: *verbose}
	e := &env{
		c:        &checker{log: log},
		log:      log,
		seed:     seed,
		apiURL:   *apiURL,
		origin:   u.Scheme + "://" + u.Host,
		released: map[string]int{},
		lastSeen: map[string]string{},
	}
	p, err := e.principals()
	if err != nil {
		fmt.Fprintf(os.Stderr, "conformance: %s: %v\n", *seedPath, err)
		os.Exit(2)
	}

	if e.tlsChecks() {
		e.apiKeyFlow(p)
		e.apiKeyPasswordFlow(p)
		e.apiKeyRefusals(p)
		e.oauthFlow(p)
		e.oauthRefusals(p)
		e.tokenSessionFlow(p)
		e.finalState()
	} else {
		e.c.check("emulator reachable", fmt.Errorf("nothing listens at %s: no other check was run", e.origin))
	}

	if e.c.failed > 0 {
		fmt.Println()
		fmt.Println("failed checks:")
		for _, f := range e.c.fails {
			fmt.Println("  - " + f)
		}
	}
	fmt.Printf("%d passed, %d failed\n", e.c.passed, e.c.failed)
	if e.c.failed > 0 {
		os.Exit(1)
	}
}

// principals picks, from the seed, the identities every flow needs. A seed that cannot
// exercise a flow is an error: nothing is skipped silently.
type principals struct {
	key        APIKey
	keyUser    User // run-as user without a password
	pwdKey     APIKey
	pwdUser    User // run-as user with a password
	otherUser  User // a seeded user that api_keys[0] does not allow
	oauth      OAuthClient
	keyGroups  []string
	pwdGroups  []string
	oauthGroup []string
}

func (e *env) principals() (principals, error) {
	var p principals
	s := e.seed
	if len(s.APIKeys) == 0 {
		return p, fmt.Errorf("no api_keys")
	}
	p.key = s.APIKeys[0]
	for _, name := range p.key.Users {
		if u, ok := s.User(name); ok && u.Password == "" {
			p.keyUser = u
			break
		}
	}
	if p.keyUser.Name == "" {
		return p, fmt.Errorf("api_keys[0] has no run-as user without a password")
	}
	for _, k := range s.APIKeys {
		for _, name := range k.Users {
			if u, ok := s.User(name); ok && u.Password != "" && p.pwdUser.Name == "" {
				p.pwdKey, p.pwdUser = k, u
			}
		}
	}
	if p.pwdUser.Name == "" {
		return p, fmt.Errorf("no API-key run-as user with a password (needed for the pwd=[...] sign-in)")
	}
	for _, u := range s.Users {
		allowed := false
		for _, n := range p.key.Users {
			if n == u.Name {
				allowed = true
			}
		}
		if !allowed {
			p.otherUser = u
			break
		}
	}
	if p.otherUser.Name == "" {
		return p, fmt.Errorf("every seeded user may use api_keys[0]; add one that may not (for the wrong-runas check)")
	}
	if len(s.OAuthClients) == 0 {
		return p, fmt.Errorf("no oauth_clients")
	}
	p.oauth = s.OAuthClients[0]
	p.keyGroups = p.keyUser.Groups
	p.pwdGroups = p.pwdUser.Groups
	p.oauthGroup = p.oauth.Groups

	// The API-key user must be able to read one secret of each type and request a managed
	// account, and some secret and account must be out of its reach.
	types := map[string]bool{}
	denied := 0
	for _, sec := range s.AllSecrets() {
		if intersects(p.keyGroups, sec.Readers) {
			types[strings.ToLower(sec.Type)] = true
		} else {
			denied++
		}
	}
	for _, t := range []string{"credential", "text", "file"} {
		if !types[t] {
			return p, fmt.Errorf("run-as user %s can read no %s secret", p.keyUser.Name, t)
		}
	}
	if denied == 0 {
		return p, fmt.Errorf("run-as user %s can read every secret; add a safe it may not read", p.keyUser.Name)
	}
	requestable, deniedMA, plain := 0, 0, 0
	for _, ma := range s.ManagedAccounts {
		if intersects(p.keyGroups, ma.Requestors) {
			requestable++
			if !ma.RotateOnCheckin {
				plain++
			}
		} else {
			deniedMA++
		}
	}
	if plain == 0 || deniedMA == 0 || requestable == 0 {
		return p, fmt.Errorf("managed_accounts need one requestable by %s without rotate_on_checkin, and one it may not request", p.keyUser.Name)
	}
	return p, nil
}
