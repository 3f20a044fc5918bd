//go:build race

package reliability

const raceEnabled = true

// defaultRandomRuns keeps `make test` (-race) near a minute for this package.
const defaultRandomRuns = 40
