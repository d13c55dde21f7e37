package main

// version.go is what "authbox --version" prints.

import "runtime/debug"

// version is the module version the binary was built at: "go install
// …@v1.2.3" records v1.2.3; a build in a git checkout records a
// pseudo-version naming the commit (v0.0.0-<time>-<commit>, with +dirty
// when files were changed); a build without either is "devel".
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
