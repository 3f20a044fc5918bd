//go:build race

package server

// raceEnabled: the race detector slows the registry's fan-out about
// tenfold, so the longest attack tests run fewer trials under it.
const raceEnabled = true
