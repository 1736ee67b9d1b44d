package main

import (
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Seed mirrors the emulator's seed file (issue 2). Only what the conformance run needs is
// read; unknown fields are rejected so a typo in seed.yaml fails loudly instead of silently
// weakening the run.
type Seed struct {
	Users           []User           `yaml:"users"`
	APIKeys         []APIKey         `yaml:"api_keys"`
	OAuthClients    []OAuthClient    `yaml:"oauth_clients"`
	Safes           []Folder         `yaml:"safes"`
	ManagedAccounts []ManagedAccount `yaml:"managed_accounts"`
}

type User struct {
	Name     string   `yaml:"name"`
	Password string   `yaml:"password"`
	Groups   []string `yaml:"groups"`
}

type APIKey struct {
	Key   string   `yaml:"key"`
	Users []string `yaml:"users"`
}

type OAuthClient struct {
	ClientID        string   `yaml:"client_id"`
	ClientSecret    string   `yaml:"client_secret"`
	User            string   `yaml:"user"`
	Groups          []string `yaml:"groups"`
	TokenTTLSeconds int      `yaml:"token_ttl_seconds"`
}

// Folder is a safe (top level, with Readers) or a folder inside one.
type Folder struct {
	Name    string   `yaml:"name"`
	Readers []string `yaml:"readers"`
	Secrets []Secret `yaml:"secrets"`
	Folders []Folder `yaml:"folders"`
}

type Secret struct {
	Title    string `yaml:"title"`
	Type     string `yaml:"type"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	Text     string `yaml:"text"`
	FileName string `yaml:"file_name"`
	Content  string `yaml:"content"`
}

type ManagedAccount struct {
	System          string   `yaml:"system"`
	Account         string   `yaml:"account"`
	Password        string   `yaml:"password"`
	Requestors      []string `yaml:"requestors"`
	RotateOnCheckin bool     `yaml:"rotate_on_checkin"`
}

// SeedSecret is one secret with its full path and the safe's readers.
type SeedSecret struct {
	Path    string // safe/folder/.../title, joined with Sep
	Sep     string // "/" unless a name contains "/", then another character (the API's separator parameter)
	Safe    string
	Readers []string
	Secret
}

// Value is what the official client must return for this secret: the password of a
// credential, the text of a text secret, the content of a file secret.
func (s SeedSecret) Value() string {
	switch strings.ToLower(s.Type) {
	case "credential":
		return s.Password
	case "text":
		return s.Text
	case "file":
		return s.Content
	}
	return ""
}

func loadSeed(path string) (*Seed, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	var s Seed
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

// AllSecrets flattens every safe and folder into path-addressed secrets.
func (s *Seed) AllSecrets() []SeedSecret {
	var out []SeedSecret
	var walk func(prefix []string, safe string, readers []string, f Folder)
	walk = func(prefix []string, safe string, readers []string, f Folder) {
		p := append(append([]string{}, prefix...), f.Name)
		for _, sec := range f.Secrets {
			segs := append(append([]string{}, p...), sec.Title)
			sep := separatorFor(segs)
			out = append(out, SeedSecret{
				Path:    strings.Join(segs, sep),
				Sep:     sep,
				Safe:    safe,
				Readers: readers,
				Secret:  sec,
			})
		}
		for _, sub := range f.Folders {
			walk(p, safe, readers, sub)
		}
	}
	for _, safe := range s.Safes {
		walk(nil, safe.Name, safe.Readers, safe)
	}
	return out
}

// separatorFor picks "/" unless a segment contains it; then the first of a few characters that
// no segment contains, as a user of the official client must do for such names.
func separatorFor(segs []string) string {
	for _, cand := range []string{"/", "|", "*", "~", "^"} {
		ok := true
		for _, s := range segs {
			if strings.Contains(s, cand) {
				ok = false
			}
		}
		if ok {
			return cand
		}
	}
	return "/"
}

func (s *Seed) User(name string) (User, bool) {
	for _, u := range s.Users {
		if u.Name == name {
			return u, true
		}
	}
	return User{}, false
}

func intersects(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}
