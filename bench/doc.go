// Package bench holds baton's published benchmark: `make bench` runs
// TestBench with -full and writes BENCHMARKS.md at the top of the
// repository and its charts under bench/charts; `make test` runs the same
// test with a few seconds per scenario so that the benchmark cannot rot.
//
// The scenarios, all loaded by baton's own generator (internal/load: no
// client retries, every failure classified):
//
//  1. steady state: webapp against a plain net/http server with the same
//     handler, keep-alive and new-connection mode, alternated A/B over
//     several rounds; the throughput ratio with its spread;
//  2. `systemctl reload webapp` under load, webapp under a real systemd
//     252 booted in a throwaway sandbox (systemd/systemdtest);
//  3. `systemctl restart webapp.service` under load, the socket held by
//     systemd;
//  4. stop: SIGTERM to exit with only idle keep-alive connections, and
//     with one in-flight request of known length;
//  5. the alternatives on the same machine in the same run: a plain
//     net/http server restarted with Shutdown (cmd/plainhttp) and
//     github.com/cloudflare/tableflip's documented upgrade pattern
//     (cmd/flipapp), next to webapp's own swap without systemd.
//
// The bench lives in its own module so that its dependencies (gonum's
// plot, tableflip) stay out of baton's go.mod.
//
// Running it needs root (the sandbox). Off CI a run without root skips
// with one line saying so; with CI=true it fails.
//
// The test's flags (after -args):
//
//	-full           full durations (about 8 minutes on 2 cores)
//	-report FILE    write the Markdown report to FILE
//	-charts DIR     write the SVG charts to DIR (linked from the report
//	                relative to FILE's directory)
//	-command TEXT   the command shown in the report
package bench
