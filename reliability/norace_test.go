//go:build !race

package reliability

const raceEnabled = false

// defaultRandomRuns keeps `make test` (-race) near a minute for this package.
const defaultRandomRuns = 100
