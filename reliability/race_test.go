//go:build race

package reliability

const raceEnabled = true

// defaultRandomRuns keeps `make test` (-race) near a minute and a half for
// this package (the enumeration pairs 16 steps now; make stress runs thousands).
const defaultRandomRuns = 20
