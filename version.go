package main

// version.go is what "authbox --version" prints.

import "runtime/debug"

// version is the module version the binary was built at ("go install
// …@v1.2.3" records it), or "devel" for a build from a work tree, which
// records none.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
