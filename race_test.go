//go:build race

package main

// The race detector's bookkeeping allocates: allocation counts that hold
// without it do not hold with it.
func init() { raceEnabled = true }
