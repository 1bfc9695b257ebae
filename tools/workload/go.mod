// The test-bed workload: the program the node tests and `make demo` run in pods. Standard
// library only, so it builds without downloading anything.
module signet.dev/tools/workload

go 1.26.0
