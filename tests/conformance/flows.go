package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BeyondTrust/go-client-library-passwordsafe/api/authentication"
	"github.com/BeyondTrust/go-client-library-passwordsafe/api/entities"
	managed_accounts "github.com/BeyondTrust/go-client-library-passwordsafe/api/managed_account"
	"github.com/BeyondTrust/go-client-library-passwordsafe/api/secrets"
	"github.com/BeyondTrust/go-client-library-passwordsafe/api/session"
	"github.com/BeyondTrust/go-client-library-passwordsafe/api/utils"
	backoff "github.com/cenkalti/backoff/v4"
)

const (
	clientTimeout = 15
	maxFileBytes  = 5_000_000
)

// newBackoff keeps the library's retries (transport errors, 5xx, 408) short so that a broken
// emulator fails the run in seconds rather than after the library's 15-minute default.
func newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.RandomizationFactor = 0.5
	b.MaxElapsedTime = 5 * time.Second
	return b
}

// ---------------------------------------------------------------------------------------------
// TLS

// tlsChecks reports false when the emulator cannot be reached at all (nothing else can pass).
func (e *env) tlsChecks() bool {
	host := strings.TrimPrefix(e.origin, "https://")

	// The library pins MaxVersion TLS 1.2 in its transport: the emulator must speak TLS 1.2.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", host, &tls.Config{
		MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
	})
	if err == nil {
		if v := conn.ConnectionState().Version; v != tls.VersionTLS12 {
			err = fmt.Errorf("negotiated %s", tls.VersionName(v))
		}
		_ = conn.Close()
	}
	e.c.check("tls: emulator accepts TLS 1.2 (the library's MaxVersion) with a certificate the system pool (SSL_CERT_FILE) trusts", err)
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return false
	}

	// Verification is really on: a client with an empty trust store is refused.
	strict := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool()}}}
	_, err = strict.Get(e.origin + "/_emulator/state")
	var uae x509.UnknownAuthorityError
	if err == nil {
		err = errors.New("a client trusting no CA was able to connect: verification is not being exercised")
	} else if errors.As(err, &uae) {
		err = nil
	} else {
		err = fmt.Errorf("expected an unknown-authority error, got: %v", err)
	}
	e.c.check("tls: a client that does not trust the emulator's CA is refused", err)
	return true
}

// ---------------------------------------------------------------------------------------------
// Sign-in helpers

func (e *env) httpClient() (*utils.HttpClientObj, error) {
	// verifyCA = true, no client certificate: the CA comes from the system pool.
	return utils.GetHttpClient(clientTimeout, true, "", "", e.log)
}

func (e *env) validate(apiKey, clientID, clientSecret, version string) error {
	apiURL := e.apiURL
	retry := 2
	return utils.ValidateInputs(utils.ValidationParams{
		ApiKey:                     apiKey,
		ClientID:                   clientID,
		ClientSecret:               clientSecret,
		ApiUrl:                     &apiURL,
		ApiVersion:                 version,
		ClientTimeOutInSeconds:     clientTimeout,
		VerifyCa:                   true,
		Logger:                     e.log,
		RetryMaxElapsedTimeMinutes: &retry,
	})
}

// psAuthKey is the "key" the library expects for API-key sign-in: it prefixes "PS-Auth key="
// to this string, so run-as and password ride along as Terraform passes them.
func psAuthKey(key, runas, pwd string) string {
	s := key + ";runas=" + runas + ";"
	if pwd != "" {
		s += "pwd=[" + pwd + "];"
	}
	return s
}

func (e *env) apiKeyAuth(apiKey, version string) (*authentication.AuthenticationObj, error) {
	hc, err := e.httpClient()
	if err != nil {
		return nil, err
	}
	return authentication.AuthenticateUsingApiKey(authentication.AuthenticationParametersObj{
		HTTPClient:                 *hc,
		BackoffDefinition:          newBackoff(),
		EndpointURL:                e.apiURL,
		APIVersion:                 version,
		ApiKey:                     apiKey,
		Logger:                     e.log,
		RetryMaxElapsedTimeSeconds: 5,
	})
}

func (e *env) oauthAuth(id, secret, version string) (*authentication.AuthenticationObj, error) {
	hc, err := e.httpClient()
	if err != nil {
		return nil, err
	}
	return authentication.Authenticate(authentication.AuthenticationParametersObj{
		HTTPClient:                 *hc,
		BackoffDefinition:          newBackoff(),
		EndpointURL:                e.apiURL,
		APIVersion:                 version,
		ClientID:                   id,
		ClientSecret:               secret,
		Logger:                     e.log,
		RetryMaxElapsedTimeSeconds: 5,
	})
}

func checkUser(u entities.SignAppinResponse, want string) error {
	if u.UserName != want {
		return fmt.Errorf("SignAppIn UserName = %q, want %q", u.UserName, want)
	}
	if u.UserId == 0 {
		return fmt.Errorf("SignAppIn UserId is 0 (missing or not a number)")
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// Flows

// apiKeyFlow: API key + runas, API version 3.1. Secrets of every type, the raw response shapes
// of every API version, managed accounts (plain, rotating, reuse, check-in), refusals, sign-out.
func (e *env) apiKeyFlow(p principals) {
	const version = "3.1"
	who := "api-key(" + p.keyUser.Name + ")"
	key := psAuthKey(p.key.Key, p.keyUser.Name, "")
	if !e.c.check(who+": library validator accepts the key (length "+strconv.Itoa(len(key))+") and URL", e.validate(key, "", "", version)) {
		e.c.fatal(who+": flow not run", errors.New("input validation failed"))
		return
	}
	auth, err := e.apiKeyAuth(key, version)
	if err != nil {
		e.c.fatal(who+": build client", err)
		return
	}
	user, err := auth.GetPasswordSafeAuthentication()
	if !e.c.check(who+": sign in (POST Auth/SignAppIn, PS-Auth key=...;runas=...;)", err) {
		e.c.fatal(who+": remaining checks of this flow not run", errors.New("sign-in failed"))
		return
	}
	e.c.check(who+": SignAppIn response names the run-as user", checkUser(user, p.keyUser.Name))

	e.secretChecks(who, auth, p.keyGroups, true)
	e.shapeChecks(who, auth, p.keyGroups)
	e.managedChecks(who, auth, p.keyGroups)
	e.requestLifecycle(who, auth, p.keyGroups)
	e.signOutChecks(who, auth)
}

// apiKeyPasswordFlow: run-as user whose registration requires pwd=[...].
func (e *env) apiKeyPasswordFlow(p principals) {
	who := "api-key(" + p.pwdUser.Name + ", pwd)"
	key := psAuthKey(p.pwdKey.Key, p.pwdUser.Name, p.pwdUser.Password)
	if !e.c.check(who+": library validator accepts the key with pwd (length "+strconv.Itoa(len(key))+")", e.validate(key, "", "", "3.1")) {
		return
	}
	auth, err := e.apiKeyAuth(key, "3.1")
	if err != nil {
		e.c.fatal(who+": build client", err)
		return
	}
	user, err := auth.GetPasswordSafeAuthentication()
	if !e.c.check(who+": sign in with PS-Auth key=...;runas=...;pwd=[...];", err) {
		return
	}
	e.c.check(who+": SignAppIn response names the run-as user", checkUser(user, p.pwdUser.Name))
	e.secretChecks(who, auth, p.pwdGroups, false)
	e.signOutChecks(who, auth)
}

// apiKeyRefusals: sign-ins the emulator must refuse with 401.
func (e *env) apiKeyRefusals(p principals) {
	unknownKey := reverse(p.key.Key)
	for _, k := range e.seed.APIKeys {
		if k.Key == unknownKey {
			unknownKey = strings.Repeat("0", len(p.key.Key))
		}
	}
	wrongPwd := p.pwdUser.Password + "x"
	cases := []struct{ name, key string }{
		{"unknown API key", psAuthKey(unknownKey, p.keyUser.Name, "")},
		{"run-as user " + p.otherUser.Name + " not allowed on this key", psAuthKey(p.key.Key, p.otherUser.Name, "")},
		{"unknown run-as user", psAuthKey(p.key.Key, "no-such-user", "")},
		{"missing pwd for " + p.pwdUser.Name, psAuthKey(p.pwdKey.Key, p.pwdUser.Name, "")},
		{"wrong pwd for " + p.pwdUser.Name, psAuthKey(p.pwdKey.Key, p.pwdUser.Name, wrongPwd)},
	}
	for _, tc := range cases {
		auth, err := e.apiKeyAuth(tc.key, "3.1")
		if err == nil {
			_, err = auth.GetPasswordSafeAuthentication()
		}
		e.c.check("api-key refusal: "+tc.name+" -> 401", wantErrContaining(err, "status code: 401"))
	}
}

// oauthFlow: client credentials (Auth/connect/token, then SignAppIn with Bearer), version 3.2.
func (e *env) oauthFlow(p principals) {
	const version = "3.2"
	who := "oauth(" + p.oauth.User + ")"
	if !e.c.check(who+": library validator accepts client id (36) and secret ("+strconv.Itoa(len(p.oauth.ClientSecret))+")",
		e.validate("", p.oauth.ClientID, p.oauth.ClientSecret, version)) {
		return
	}
	auth, err := e.oauthAuth(p.oauth.ClientID, p.oauth.ClientSecret, version)
	if err != nil {
		e.c.fatal(who+": build client", err)
		return
	}
	user, err := auth.GetPasswordSafeAuthentication()
	if !e.c.check(who+": token (POST Auth/connect/token) and sign in (SignAppIn, Bearer)", err) {
		e.c.fatal(who+": remaining checks of this flow not run", errors.New("sign-in failed"))
		return
	}
	e.c.check(who+": SignAppIn response names the application user", checkUser(user, p.oauth.User))
	e.secretChecks(who, auth, p.oauthGroup, false)
	e.managedChecks(who, auth, p.oauthGroup)
	e.signOutChecks(who, auth)
}

func (e *env) oauthRefusals(p principals) {
	badSecret := p.oauth.ClientSecret[:len(p.oauth.ClientSecret)-1] + flip(p.oauth.ClientSecret[len(p.oauth.ClientSecret)-1])
	cases := []struct{ name, id, secret string }{
		{"wrong client secret", p.oauth.ClientID, badSecret},
		{"unknown client id", "00000000-0000-4000-8000-000000000000", p.oauth.ClientSecret},
	}
	for _, tc := range cases {
		auth, err := e.oauthAuth(tc.id, tc.secret, "3.2")
		if err == nil {
			_, err = auth.GetPasswordSafeAuthentication()
		}
		e.c.check("oauth refusal: "+tc.name+" -> 400 or 401", wantErrContaining(err, "status code: 400", "status code: 401"))
	}
}

// tokenSessionFlow: the token details call and session.NewSessionFromToken (the path used with
// BeyondTrust's Kubernetes authenticator), default API version 3.0.
func (e *env) tokenSessionFlow(p principals) {
	who := "token-session(" + p.oauth.User + ")"
	auth, err := e.oauthAuth(p.oauth.ClientID, p.oauth.ClientSecret, "")
	if err != nil {
		e.c.fatal(who+": build client", err)
		return
	}
	tok, err := auth.GetTokenDetails(auth.ApiUrl.JoinPath("Auth/connect/token").String(), p.oauth.ClientID, p.oauth.ClientSecret)
	if !e.c.check(who+": POST Auth/connect/token", err) {
		return
	}
	var terr error
	switch {
	case tok.AccessToken == "":
		terr = errors.New("access_token is empty")
	case !strings.EqualFold(tok.TokenType, "Bearer"):
		terr = fmt.Errorf("token_type = %q, want Bearer", tok.TokenType)
	case p.oauth.TokenTTLSeconds != 0 && tok.ExpiresIn != p.oauth.TokenTTLSeconds:
		terr = fmt.Errorf("expires_in = %d, want token_ttl_seconds %d", tok.ExpiresIn, p.oauth.TokenTTLSeconds)
	case p.oauth.TokenTTLSeconds == 0 && tok.ExpiresIn <= 0:
		terr = fmt.Errorf("expires_in = %d", tok.ExpiresIn)
	}
	e.c.check(who+": token response fields (access_token, token_type, expires_in)", terr)

	hc, err := e.httpClient()
	if err != nil {
		e.c.fatal(who+": build client", err)
		return
	}
	sess, err := session.NewSessionFromToken(context.Background(), tok.AccessToken, session.Parameters{
		HTTPClient:                 *hc,
		BackoffDefinition:          newBackoff(),
		EndpointURL:                e.apiURL,
		Logger:                     e.log,
		RetryMaxElapsedTimeSeconds: 5,
		MaxFileSecretSizeBytes:     maxFileBytes,
		DecryptSecrets:             true,
	})
	if !e.c.check(who+": session.NewSessionFromToken (SignAppIn with Bearer)", err) {
		return
	}
	n := 0
	for _, s := range e.seed.AllSecrets() {
		if !intersects(p.oauthGroup, s.Readers) {
			continue
		}
		got, err := sess.GetSecret(s.Path, s.Sep)
		if err == nil {
			err = sameValue(got, s.Value())
		}
		e.c.check(fmt.Sprintf("%s: %s secret %q (version 3.0)", who, s.Type, s.Path), err)
		n++
	}
	if n == 0 {
		e.c.check(who+": secrets", errors.New("the OAuth client can read no secret in the seed"))
	}
	for _, ma := range e.seed.ManagedAccounts {
		if !intersects(p.oauthGroup, ma.Requestors) {
			continue
		}
		got, err := sess.GetManagedAccount(ma.System+sep+ma.Account, sep)
		if err == nil {
			err = e.expectManaged(ma, got)
		}
		e.c.check(fmt.Sprintf("%s: managed account %s/%s", who, ma.System, ma.Account), err)
	}
	e.c.check(who+": sign out (Session.Close)", sess.Close())
}

// ---------------------------------------------------------------------------------------------
// Secrets Safe

func (e *env) secretChecks(who string, auth *authentication.AuthenticationObj, groups []string, extras bool) {
	so, _ := secrets.NewSecretObj(*auth, e.log, maxFileBytes, true)
	var readable []SeedSecret
	var denied []SeedSecret
	for _, s := range e.seed.AllSecrets() {
		if !intersects(groups, s.Readers) {
			denied = append(denied, s)
			continue
		}
		readable = append(readable, s)
		got, err := so.GetSecret(s.Path, s.Sep)
		if err == nil {
			err = sameValue(got, s.Value())
		}
		e.c.check(fmt.Sprintf("%s: %s secret %q", who, s.Type, s.Path), err)
	}
	if len(readable) == 0 {
		e.c.check(who+": secrets", errors.New("this principal can read no secret in the seed"))
		return
	}

	// Batch lookups: one map per separator with every path.
	bySep := map[string][]SeedSecret{}
	var seps []string
	for _, s := range readable {
		if _, ok := bySep[s.Sep]; !ok {
			seps = append(seps, s.Sep)
		}
		bySep[s.Sep] = append(bySep[s.Sep], s)
	}
	for _, sp := range seps {
		group := bySep[sp]
		var paths []string
		for _, s := range group {
			paths = append(paths, s.Path)
		}
		got, err := so.GetSecrets(paths, sp)
		if err == nil {
			for _, s := range group {
				v, ok := got[s.Path]
				if !ok {
					err = fmt.Errorf("%q missing from the result", s.Path)
					break
				}
				if verr := sameValue(v, s.Value()); verr != nil {
					err = fmt.Errorf("%q: %v", s.Path, verr)
					break
				}
			}
			if err == nil && len(got) != len(paths) {
				err = fmt.Errorf("got %d entries, want %d", len(got), len(paths))
			}
		}
		e.c.check(fmt.Sprintf("%s: batch GetSecrets of %d paths, separator %q", who, len(paths), sp), err)
	}

	// Safes this principal may not read.
	for _, s := range denied {
		v, err := so.GetSecret(s.Path, s.Sep)
		if err == nil {
			err = errors.New("the secret was returned to a principal whose groups may not read its safe")
		} else if v != "" {
			err = errors.New("an error was returned together with a value")
		} else {
			err = nil
		}
		e.c.check(fmt.Sprintf("%s: secret %q in safe %q (not a reader) is refused", who, s.Path, s.Safe), err)
	}

	if !extras {
		return
	}
	// Unknown title in a readable folder: the server answers 200 [] and the library turns the
	// empty list into its own "Secret was not found" error (an HTTP 404 reads differently).
	r0 := readable[0]
	missing := r0.Path[:strings.LastIndex(r0.Path, r0.Sep)+1] + "no-such-secret"
	_, err := so.GetSecret(missing, r0.Sep)
	e.c.check(fmt.Sprintf("%s: unknown secret %q -> 200 [] (library: Secret was not found)", who, missing),
		wantErrContaining(err, "Secret was not found"))

	// decrypt=false leaves the password out of the lookup response.
	for _, s := range readable {
		if strings.EqualFold(s.Type, "credential") {
			noDecrypt, _ := secrets.NewSecretObj(*auth, e.log, maxFileBytes, false)
			v, err := noDecrypt.GetSecret(s.Path, s.Sep)
			if err == nil && v != "" {
				err = errors.New("decrypt=false still returned the password")
			}
			e.c.check(fmt.Sprintf("%s: credential %q with decrypt=false has no password", who, s.Path), err)
			break
		}
	}
}

// rawGet issues a GET through the library's own HTTP client (same session cookie).
func rawGet(auth *authentication.AuthenticationObj, path string, q url.Values) ([]byte, error) {
	u := auth.ApiUrl.JoinPath(path)
	u.RawQuery = q.Encode()
	return auth.HttpClient.MakeRequest(&entities.CallSecretSafeAPIObj{
		Url:         u.String(),
		HttpMethod:  "GET",
		Body:        bytes.Buffer{},
		Method:      "conformance raw GET",
		ContentType: "application/json",
	}, newBackoff())
}

// shapeChecks looks at the raw secrets-by-path response of every API version: the library
// accepts both shapes, so only a raw look can tell whether the version is honoured.
func (e *env) shapeChecks(who string, auth *authentication.AuthenticationObj, groups []string) {
	byType := map[string]SeedSecret{}
	for _, s := range e.seed.AllSecrets() {
		t := strings.ToLower(s.Type)
		if _, ok := byType[t]; !ok && intersects(groups, s.Readers) {
			byType[t] = s
		}
	}
	cred := byType["credential"]
	for _, version := range []string{"", "3.0", "3.1", "3.2"} {
		q := lookupQuery(cred, version)
		body, err := rawGet(auth, "secrets-safe/secrets", q)
		label := version
		if label == "" {
			label = "none (3.0)"
		}
		if err == nil {
			_, err = decodeShape(body, version == "3.2")
		}
		want := "bare array"
		if version == "3.2" {
			want = `{"TotalCount":1,"Data":[...]}`
		}
		e.c.check(fmt.Sprintf("%s: secrets by path, version %s -> %s", who, label, want), err)
	}
	for _, t := range []string{"credential", "text", "file"} {
		s := byType[t]
		body, err := rawGet(auth, "secrets-safe/secrets", lookupQuery(s, "3.1"))
		if err == nil {
			var items []map[string]any
			items, err = decodeShape(body, false)
			if err == nil {
				err = checkSecretFields(items[0], s)
			}
		}
		e.c.check(fmt.Sprintf("%s: %s secret %q object fields (Id, Title, SecretType, Username/FileName, Password)", who, t, s.Path), err)
	}
}

func lookupQuery(s SeedSecret, version string) url.Values {
	i := strings.LastIndex(s.Path, s.Sep)
	q := url.Values{}
	q.Set("path", s.Path[:i])
	q.Set("title", s.Path[i+len(s.Sep):])
	q.Set("separator", s.Sep)
	q.Set("decrypt", "true")
	if version != "" {
		q.Set("version", version)
	}
	return q
}

func decodeShape(body []byte, wrapped bool) ([]map[string]any, error) {
	if wrapped {
		var w struct {
			TotalCount *int             `json:"TotalCount"`
			Data       []map[string]any `json:"Data"`
		}
		if err := json.Unmarshal(body, &w); err != nil {
			return nil, fmt.Errorf("not a {TotalCount, Data} object: %v", err)
		}
		if w.TotalCount == nil || w.Data == nil {
			return nil, errors.New("TotalCount or Data missing")
		}
		if *w.TotalCount != 1 || len(w.Data) != 1 {
			return nil, fmt.Errorf("TotalCount=%d, len(Data)=%d, want 1 and 1", *w.TotalCount, len(w.Data))
		}
		return w.Data, nil
	}
	var items []map[string]any
	if err := json.Unmarshal(body, &items); err != nil {
		return nil, fmt.Errorf("not a bare JSON array: %v", err)
	}
	if len(items) != 1 {
		return nil, fmt.Errorf("%d items, want 1", len(items))
	}
	return items, nil
}

func checkSecretFields(obj map[string]any, s SeedSecret) error {
	str := func(k string) (string, bool) {
		v, ok := obj[k].(string)
		return v, ok
	}
	if v, ok := str("Id"); !ok || v == "" {
		return errors.New("Id missing or not a string")
	}
	if v, _ := str("Title"); v != s.Title {
		return fmt.Errorf("Title = %q, want %q", v, s.Title)
	}
	if v, _ := str("SecretType"); !strings.EqualFold(v, s.Type) {
		return fmt.Errorf("SecretType = %q, want %q (any case)", v, s.Type)
	}
	switch strings.ToLower(s.Type) {
	case "credential":
		if v, _ := str("Username"); v != s.Username {
			return fmt.Errorf("Username = %q, want %q", v, s.Username)
		}
		v, _ := str("Password")
		if err := sameValue(v, s.Password); err != nil {
			return fmt.Errorf("Password: %v", err)
		}
	case "text":
		v, _ := str("Password")
		if err := sameValue(v, s.Text); err != nil {
			return fmt.Errorf("Password (clients read a text secret's value from Password): %v", err)
		}
	case "file":
		if v, _ := str("FileName"); v != s.FileName {
			return fmt.Errorf("FileName = %q, want %q", v, s.FileName)
		}
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// Managed accounts

// expectManaged checks a released password: the seed value on the first release, and for a
// rotate_on_checkin account a new, non-empty value after every check-in.
func (e *env) expectManaged(ma ManagedAccount, got string) error {
	k := ma.System + "/" + ma.Account
	n, prev := e.released[k], e.lastSeen[k]
	e.released[k]++
	e.lastSeen[k] = got
	if !ma.RotateOnCheckin || n == 0 {
		return sameValue(got, ma.Password)
	}
	switch {
	case got == "":
		return errors.New("empty password after rotation (or a Credentials body strconv.Unquote could not read)")
	case got == prev || got == ma.Password:
		return fmt.Errorf("rotate_on_checkin: release %d returned the same value as before the check-in", n+1)
	}
	return nil
}

func (e *env) managedChecks(who string, auth *authentication.AuthenticationObj, groups []string) {
	mo, _ := managed_accounts.NewManagedAccountObj(*auth, e.log)
	for _, ma := range e.seed.ManagedAccounts {
		path := ma.System + sep + ma.Account
		if intersects(groups, ma.Requestors) {
			releases := 1
			if ma.RotateOnCheckin {
				releases = 2 // once more, to see the rotated value
			}
			for i := 0; i < releases; i++ {
				got, err := mo.GetSecret(path, sep)
				if err == nil {
					err = e.expectManaged(ma, got)
				}
				label := ""
				if ma.RotateOnCheckin {
					label = fmt.Sprintf(" (rotate_on_checkin, release %d of %d)", i+1, releases)
				}
				e.c.check(fmt.Sprintf("%s: managed account %s: lookup, request, credentials, check-in%s", who, path, label), err)
			}
			continue
		}
		v, err := mo.GetSecret(path, sep)
		if err == nil {
			err = errors.New("the password was released to a principal whose groups may not request the account")
		} else if v != "" {
			err = errors.New("an error was returned together with a value")
		} else {
			err = nil
		}
		e.c.check(fmt.Sprintf("%s: managed account %s (not a requestor) is refused", who, path), err)
	}
	_, err := mo.GetSecret("db-prod-does-not-exist"+sep+"nobody", sep)
	e.c.check(who+": unknown managed account -> 404", wantErrContaining(err, "status code: 404"))
}

var requestID = regexp.MustCompile(`^[0-9]+$`)

// requestLifecycle walks the managed-account calls one by one with the library's own methods:
// lookup fields, POST Requests twice (ConflictOption reuse -> same id), Credentials (a JSON
// string), check-in, a second check-in, and Credentials after check-in.
func (e *env) requestLifecycle(who string, auth *authentication.AuthenticationObj, groups []string) {
	var ma ManagedAccount
	for _, m := range e.seed.ManagedAccounts {
		if intersects(groups, m.Requestors) && !m.RotateOnCheckin {
			ma = m
			break
		}
	}
	mo, _ := managed_accounts.NewManagedAccountObj(*auth, e.log)
	v := url.Values{}
	v.Add("systemName", ma.System)
	v.Add("accountName", ma.Account)
	acct, err := mo.ManagedAccountGet(ma.System, ma.Account, auth.ApiUrl.JoinPath("ManagedAccounts").String()+"?"+v.Encode())
	if err == nil {
		switch {
		case acct.SystemName != ma.System || acct.AccountName != ma.Account:
			err = fmt.Errorf("SystemName/AccountName = %q/%q, want %q/%q", acct.SystemName, acct.AccountName, ma.System, ma.Account)
		case acct.SystemId == 0 || acct.AccountId == 0:
			err = fmt.Errorf("SystemId=%d AccountId=%d, want non-zero", acct.SystemId, acct.AccountId)
		}
	}
	name := fmt.Sprintf("%s: GET ManagedAccounts?systemName=%s&accountName=%s -> one object", who, ma.System, ma.Account)
	if !e.c.check(name, err) {
		e.c.fatal(who+": request lifecycle not run", errors.New("lookup failed"))
		return
	}
	reqURL := auth.ApiUrl.JoinPath("Requests").String()
	id1, err := mo.ManagedAccountCreateRequest(acct.SystemId, acct.AccountId, reqURL)
	if err == nil && !requestID.MatchString(id1) {
		err = fmt.Errorf("POST Requests body is not a bare integer (%d bytes; the library pastes it into the next URLs)", len(id1))
	}
	if !e.c.check(who+": POST Requests (ConflictOption reuse) -> bare integer id", err) {
		return
	}
	id2, err := mo.ManagedAccountCreateRequest(acct.SystemId, acct.AccountId, reqURL)
	if err == nil && id2 != id1 {
		err = fmt.Errorf("second request got id %s, want the open request %s reused", id2, id1)
	}
	e.c.check(who+": POST Requests again while open -> same request reused", err)

	credURL := auth.ApiUrl.JoinPath("Credentials", id1).String()
	body, err := mo.CredentialByRequestId(id1, credURL)
	if err == nil {
		var js string
		if jerr := json.Unmarshal([]byte(body), &js); jerr != nil {
			err = fmt.Errorf("Credentials body is not a JSON string: %v", jerr)
		} else if uq, uerr := strconv.Unquote(body); uerr != nil {
			err = fmt.Errorf("Credentials body is JSON but strconv.Unquote (what the library uses) fails: %v", uerr)
		} else if uq != js {
			err = errors.New("strconv.Unquote and JSON decoding disagree on the Credentials body")
		} else {
			err = sameValue(uq, ma.Password)
		}
	}
	e.c.check(who+": GET Credentials/{id} -> JSON string with the seed password", err)

	checkinURL := auth.ApiUrl.JoinPath("Requests", id1, "checkin").String()
	_, err = mo.ManagedAccountRequestCheckIn(id1, checkinURL)
	e.c.check(who+": PUT Requests/{id}/checkin", err)

	_, err = mo.ManagedAccountRequestCheckIn(id1, checkinURL)
	e.c.check(who+": second check-in of the same request is refused (4xx)", wantErrContaining(err, "status code: 4"))

	_, err = mo.CredentialByRequestId(id1, credURL)
	e.c.check(who+": GET Credentials/{id} after check-in is refused (4xx)", wantErrContaining(err, "status code: 4"))
}

// ---------------------------------------------------------------------------------------------
// Sign-out and final state

func (e *env) signOutChecks(who string, auth *authentication.AuthenticationObj) {
	e.c.check(who+": sign out (POST Auth/Signout)", auth.SignOut())
	// The session cookie no longer works.
	so, _ := secrets.NewSecretObj(*auth, e.log, maxFileBytes, true)
	var first SeedSecret
	for _, s := range e.seed.AllSecrets() {
		first = s
		break
	}
	_, err := so.GetSecret(first.Path, first.Sep)
	e.c.check(who+": a call after sign-out -> 401", wantErrContaining(err, "status code: 401"))
}

// finalState asks the emulator's operator endpoint whether every session was closed and every
// request checked in, which the library itself does not verify (SignOut ignores transport
// errors; GetSecret hides check-in failures behind a logged error).
func (e *env) finalState() {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(e.origin + "/_emulator/state")
	var st struct {
		SessionsOpen *int           `json:"sessions_open"`
		RequestsOpen *int           `json:"requests_open"`
		Calls        map[string]int `json:"calls"`
	}
	if err == nil {
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		switch {
		case resp.StatusCode != 200:
			err = fmt.Errorf("GET /_emulator/state: %s", resp.Status)
		default:
			if jerr := json.Unmarshal(b, &st); jerr != nil {
				err = fmt.Errorf("GET /_emulator/state: %v", jerr)
			} else if st.SessionsOpen == nil || st.RequestsOpen == nil || st.Calls == nil {
				err = errors.New("GET /_emulator/state lacks sessions_open, requests_open or calls")
			}
		}
	}
	if !e.c.check("emulator state: GET /_emulator/state", err) {
		return
	}
	var serr error
	if *st.SessionsOpen != 0 {
		serr = fmt.Errorf("sessions_open = %d, want 0 after every sign-out", *st.SessionsOpen)
	}
	e.c.check("emulator state: no session left open", serr)
	var rerr error
	if *st.RequestsOpen != 0 {
		rerr = fmt.Errorf("requests_open = %d, want 0 after every check-in", *st.RequestsOpen)
	}
	e.c.check("emulator state: no request left open", rerr)
	var cerr error
	for _, route := range []string{"POST auth/connect/token", "POST auth/signappin", "POST auth/signout",
		"GET secrets-safe/secrets", "GET secrets-safe/secrets/{id}/file/download", "GET managedaccounts",
		"POST requests", "GET credentials/{id}", "PUT requests/{id}/checkin"} {
		if st.Calls[route] == 0 {
			cerr = fmt.Errorf("calls[%q] is 0 or missing (route keys of docs/emulator-contract.md)", route)
			break
		}
	}
	e.c.check("emulator state: calls counted under every route the library used", cerr)
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}
