// Package cputime reads the process's CPU time for benchmarks: unlike
// wall-clock time it barely moves when other processes load the machine,
// so before/after comparisons on a shared machine stay readable
// (docs/benchmarks.md).
package cputime
