// yaml-oracle reads manifest streams exactly as `kubectl apply -f` does and prints what kubectl
// sees, so tests can compare `ps-webhook inject`'s reading and writing against Kubernetes' own.
//
// kubectl's reader is cli-runtime's StreamVisitor: apimachinery's YAMLOrJSONDecoder (buffer
// 4096) decoding each document into a runtime.RawExtension (YAML through sigs.k8s.io/yaml, so
// YAML 1.1 scalars, merge keys and JSON conversion as Kubernetes does them), trimming it, and
// skipping empty and `null` documents. This program calls those same functions.
//
//	yaml-oracle FILE...      (- for standard input)
//
// For each FILE it prints one JSON line:
//
//	{"file": NAME, "objects": [DOC, ...], "error": MESSAGE}
//
// where each DOC is the document as kubectl reads it (compact JSON) and "error" (absent when
// the whole stream was read) is the message kubectl would stop with; "objects" then holds the
// documents read before it. The exit status is 0 unless a file cannot be opened.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
)

type result struct {
	File    string            `json:"file"`
	Objects []json.RawMessage `json:"objects"`
	Error   string            `json:"error,omitempty"`
}

// read mirrors StreamVisitor.Visit up to the point where kubectl turns each document into an
// object: the same decoder, buffer size, trimming and skipping.
func read(r io.Reader) (objects []json.RawMessage, err error) {
	objects = []json.RawMessage{}
	d := yaml.NewYAMLOrJSONDecoder(r, 4096)
	for {
		ext := runtime.RawExtension{}
		if err := d.Decode(&ext); err != nil {
			if err == io.EOF {
				return objects, nil
			}
			return objects, err
		}
		ext.Raw = bytes.TrimSpace(ext.Raw)
		if len(ext.Raw) == 0 || bytes.Equal(ext.Raw, []byte("null")) {
			continue
		}
		// A JSON stream keeps the document's own bytes; compacting makes both paths print one
		// line per document without changing what it says.
		var compact bytes.Buffer
		if err := json.Compact(&compact, ext.Raw); err != nil {
			return objects, fmt.Errorf("document %d is not JSON after decoding: %w", len(objects)+1, err)
		}
		objects = append(objects, json.RawMessage(compact.Bytes()))
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: yaml-oracle FILE... (- for standard input)")
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for _, name := range os.Args[1:] {
		var r io.Reader
		if name == "-" {
			r = os.Stdin
		} else {
			f, err := os.Open(name)
			if err != nil {
				out.Flush()
				fmt.Fprintln(os.Stderr, "yaml-oracle:", err)
				os.Exit(2)
			}
			defer f.Close()
			r = f
		}
		objects, err := read(r)
		res := result{File: name, Objects: objects}
		if err != nil {
			res.Error = err.Error()
		}
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, "yaml-oracle:", err)
			os.Exit(2)
		}
	}
}
