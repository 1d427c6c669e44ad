// Command podsecurity checks pod specs against a Pod Security Standards level with the checks of
// k8s.io/pod-security-admission, the library behind the API server's PodSecurity admission.
//
// stdin: a JSON object {"<name>": {"metadata": {...}, "spec": {...}}, ...}, one entry per pod
// (a workload's pod template is a pod). Unknown fields are an error, so a typo is not ignored.
// stdout: a JSON object {"<name>": ["<reason> (<detail>)", ...]}, every input name, [] when allowed.
// Exit status 0 when every pod was evaluated, 2 on bad input or flags.
//
// Built by `make tools` (mlflow_gitops/podsecurity.py) at the version go.mod pins.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

const library = "k8s.io/pod-security-admission"

// source is stamped at build time: a digest of this module's files, so a stale binary is rebuilt.
var source = "unknown"

type pod struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     corev1.PodSpec    `json:"spec"`
}

func libraryVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == library {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "podsecurity: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	levelFlag := flag.String("level", "restricted", "policy level: privileged, baseline or restricted")
	policyVersion := flag.String("policy-version", "latest", `policy version: "latest" or "v1.x"`)
	printVersion := flag.Bool("version", false, "print the library version and source digest, then exit")
	flag.Parse()
	if *printVersion {
		fmt.Printf("podsecurity %s %s source %s\n", library, libraryVersion(), source)
		return
	}
	level, err := api.ParseLevel(*levelFlag)
	if err != nil {
		fail("-level %q: %v", *levelFlag, err)
	}
	version, err := api.ParseVersion(*policyVersion)
	if err != nil {
		fail("-policy-version %q: %v", *policyVersion, err)
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		fail("%v", err)
	}

	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(input, &raw); err != nil {
		fail(`stdin: expected a JSON object {"<name>": {"metadata": ..., "spec": ...}}: %v`, err)
	}
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	sort.Strings(names)

	lv := api.LevelVersion{Level: level, Version: version}
	out := make(map[string][]string, len(raw))
	for _, name := range names {
		decoder := json.NewDecoder(bytes.NewReader(raw[name]))
		decoder.DisallowUnknownFields()
		var p pod
		if err := decoder.Decode(&p); err != nil {
			fail("%s: not a pod (metadata, spec): %v", name, err)
		}
		found := []string{}
		for _, result := range evaluator.EvaluatePod(lv, &p.Metadata, &p.Spec) {
			if result.Allowed {
				continue
			}
			message := result.ForbiddenReason
			if result.ForbiddenDetail != "" {
				message += " (" + result.ForbiddenDetail + ")"
			}
			found = append(found, message)
		}
		out[name] = found
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	if err := encoder.Encode(out); err != nil {
		fail("writing stdout: %v", err)
	}
}
