// Package bench holds baton's published benchmark: `make bench` runs
// TestBench with -full and writes BENCHMARKS.md at the top of the
// repository and its charts under bench/charts; `make test` runs the same
// test with a few seconds per scenario so that the benchmark cannot rot.
//
// Scenarios 1 to 5 are loaded by baton's own generator (internal/load:
// no client retries, every failure classified):
//
//  1. steady state: webapp, serving all four of its sockets (http,
//     https, grpc, udp), against a plain net/http server with the same
//     handler, against the same four servers without baton (cmd/plainhttp
//     with --h2c, --listen-https, --listen-grpc and --listen-udp), and
//     against webapp serving its http socket alone, keep-alive and
//     new-connection mode on the http socket, in rotating
//     A B C D D C B A rounds; the throughput ratio and the ratio of server
//     CPU time per request (/proc/PID/stat), each with its spread;
//  2. `systemctl reload webapp` under load, webapp under a real systemd
//     252 booted in a throwaway sandbox (systemd/systemdtest), its four
//     socket units from systemd/units;
//  3. `systemctl restart webapp.service` under load, the sockets held by
//     systemd;
//  4. stop: SIGTERM to exit with only idle keep-alive connections, and
//     with one in-flight request of known length;
//  5. the alternatives on the same machine in the same run: a plain
//     net/http server restarted with Shutdown (cmd/plainhttp) and
//     github.com/cloudflare/tableflip's documented upgrade pattern
//     (cmd/flipapp), next to webapp's own swap without systemd.
//
// Scenarios 6, 7, 9 and 10 use clients nobody here wrote (scenario 8 is
// scenario 2 again under systemd 257):
//
//  6. every protocol through reloads and then restarts under the real
//     systemd: h2load (Debian's nghttp2-client) over h2c on the http
//     socket and over TLS on the https socket, run again and again for a
//     short count (h2load does not reconnect after a GOAWAY); ghz, unary
//     grpc.health.v1.Health/Check found by reflection, on the grpc
//     socket (its JSON report counts the calls, since ghz exits 0 when
//     calls fail); a UDP client of the benchmark's own that counts every
//     datagram sent and answered, by pid; then all four at once. Server
//     CPU per request is read from the cpu.stat of the slice that
//     webapp.service runs in for the benchmark;
//  7. drain: SIGTERM to webapp (its own sockets) with many HTTP/2
//     connections (idle after being busy, or kept busy through the drain)
//     and webapp.v1.Ticker/Ticks streams open: time to exit, what the log
//     says was cut, and how the streams ended (UNAVAILABLE "draining,
//     retry");
//  8. reload under Debian 13's systemd 257 (a sandbox booted from the
//     root systemdtest.DebianRoot builds): the shipped ExecReload= client
//     against the Type=notify-reload drop-in, same load as scenario 2.
//  9. long-lived connections under the real systemd: WebSocket clients
//     on webapp's GET /ws (Debian's python3-websockets, several asyncio
//     processes; a numbered message every 100 ms, reconnecting and
//     resending what was not echoed) and server-sent-event clients on
//     GET /events (Python's http.client, resuming with Last-Event-ID)
//     through reloads and restarts: abnormal closures, messages lost,
//     ids missing or repeated, the reconnect to the new pid after each
//     reload returned and the old generation's exit; then the contrast,
//     with webapp's drain signal switched off (WEBAPP_IGNORE_DRAIN=1).
//     Without python3-websockets it is skipped off CI, like scenario 6.
//  10. keep-alive connections by the thousand (1,000, 4,000 and 16,000)
//     through 20 reloads each under the real systemd, loaded by wrk
//     (Debian's; at most 4,000 connections to a process, which opens
//     them all at once: the socket's backlog is 4,096) and by the
//     generator (in the test's process): failed requests, the new
//     connections each reload made the clients open (the generator's
//     dials; for wrk the host's TCP active opens, an upper bound), the
//     throughput within ±1 s of the reloads against steady (from the
//     generator's samples), the reloads' wall time and the old
//     generations' drains (webapp's drain-finished journal entries);
//     with webapp's connection hand-over and without it
//     (--conn-handover=false; a webapp without the flag runs only
//     without). Then webapp's resident memory per idle connection
//     against plain net/http's, and `systemctl stop` with 16,000
//     connections open, half idle and half paced, counting how each
//     ended. Without wrk it is skipped off CI.
//
// The sandbox installs webapp.service and the four socket units from
// systemd/units, moves each socket to a free port with a drop-in, and
// adds to webapp.service a drop-in with the benchmark's slice and those
// of Sockets=, ExecReload=+ and LoadCredential= that the shipped unit
// does not have yet. A certificate made for the run goes to /etc/webapp.
//
// ghz is installed by the benchmark itself (go install, version
// ghzVersion) into bin/tools/ghz-VERSION at the top of the repository,
// outside every go.mod; h2load and wrk come from `make deps`. With CI=true a
// missing one fails the test; otherwise scenario 6 is skipped with one
// line saying so.
//
// The bench lives in its own module so that its dependencies (gonum's
// plot, tableflip, the gRPC client) stay out of baton's go.mod.
//
// Running it needs root (the sandbox). Off CI a run without root skips
// with one line saying so; with CI=true it fails.
//
// The test's flags (after -args):
//
//	-full           full durations (about 35 minutes on 2 cores)
//	-report FILE    write the Markdown report to FILE
//	-charts DIR     write the SVG charts to DIR (linked from the report
//	                relative to FILE's directory)
//	-command TEXT   the command shown in the report
//	-keep DIR       keep the servers' logs and the sandbox journals in DIR
//
// Each scenario is a subtest of TestBench named by its key (steady,
// stop, alternatives, systemd, drain, protocols, systemd257, longlived,
// scale); -run selects some, and the report then holds what they
// measured, for example scenario 10 alone, in full:
//
//	go test -count=1 -timeout 30m -run '^TestBench$/^scale$' -v . -args -full -report /var/tmp/scale.md
package bench
