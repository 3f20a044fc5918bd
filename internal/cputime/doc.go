// Package cputime reads the CPU time of the whole process, for the
// benchmarks that compare work rather than wall time: unlike wall time it
// does not count the time the process waits for a CPU another process
// holds.
package cputime
