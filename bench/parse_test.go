package bench

import (
	"strings"
	"testing"
	"time"
)

// h2loadOutput is the end of a real h2load 1.52 run.
const h2loadOutput = `starting benchmark...
spawning thread #0: 8 total client(s). 2000 total requests
Application protocol: h2c
progress: 100% done

finished in 600.66ms, 3329.65 req/s, 118.87KB/s
requests: 2000 total, 2000 started, 1998 done, 1990 succeeded, 10 failed, 2 errored, 1 timeout
status codes: 1989 2xx, 0 3xx, 1 4xx, 0 5xx
traffic: 71.40KB (73112) total, 12.33KB (12624) headers (space savings 95.29%), 23.44KB (24000) data
`

func TestParseH2load(t *testing.T) {
	got, err := ParseH2load([]byte(h2loadOutput))
	want := H2loadSummary{Protocol: "h2c", Total: 2000, Started: 2000, Done: 1998, Succeeded: 1990, Failed: 10, Errored: 2, Timeout: 1,
		Status2xx: 1989, Took: 600660 * time.Microsecond}
	if err != nil || got != want {
		t.Errorf("ParseH2load = %+v, %v; want %+v", got, err, want)
	}
	if _, err := ParseH2load([]byte("starting benchmark...\nprogress: 10% done\n")); err == nil {
		t.Error("ParseH2load(output without a requests line) = nil error, want one")
	}
}

func TestParseGhz(t *testing.T) {
	out := `{"date":"2026-12-02T05:50:33Z","endReason":"timeout","count":2010,"total":302718859,"rps":6606.79,
		"errorDistribution":{"rpc error: code = Unavailable desc = closing":10},"statusCodeDistribution":{"OK":2000,"Unavailable":10},
		"details":[{"timestamp":"2026-12-02T05:50:38.715444945Z","latency":1,"error":"","status":"OK"},
			{"timestamp":"2026-12-02T05:50:38.716727288Z","latency":2,"error":"the connection is draining","status":"Unavailable"}]}`
	got, err := ParseGhz([]byte(out))
	if err != nil || got.Count != 2010 || got.OK() != 2000 || got.Statuses["Unavailable"] != 10 || len(got.Errors) != 1 || got.EndReason != "timeout" {
		t.Errorf("ParseGhz = %+v, %v; want count 2010, OK 2000, Unavailable 10, one error, endReason timeout", got, err)
	}
	if len(got.Details) != 2 || got.Details[1].Status != "Unavailable" || got.Details[1].Timestamp.Nanosecond() != 716727288 {
		t.Errorf("ParseGhz details = %+v, want two calls, the second Unavailable at .716727288", got.Details)
	}
	for _, bad := range []string{"", "Summary: ...", `{"count": 3}`} {
		if _, err := ParseGhz([]byte(bad)); err == nil {
			t.Errorf("ParseGhz(%q) = nil error, want one", bad)
		}
	}
}

func TestParseUDPAnswer(t *testing.T) {
	tests := []struct {
		answer, sent string
		pid          int
		ok           bool
	}{
		{"123 bench 1 2", "bench 1 2", 123, true},
		{"123 bench 1 3", "bench 1 2", 123, false},
		{"bench 1 2", "bench 1 2", 0, false},
		{"-4 x", "x", 0, false},
		{"42 ", "", 42, true},
	}
	for _, tt := range tests {
		pid, err := ParseUDPAnswer([]byte(tt.answer), []byte(tt.sent))
		if (err == nil) != tt.ok || (tt.ok && pid != tt.pid) {
			t.Errorf("ParseUDPAnswer(%q, %q) = %d, %v; want %d, ok %t", tt.answer, tt.sent, pid, err, tt.pid, tt.ok)
		}
	}
}

func TestParseDrainLog(t *testing.T) {
	log := `time="2026-12-02T05:50:40Z" level=info msg="stopping: draining 12 connections (deadline 20s)"
time="2026-12-02T05:50:41Z" level=info msg="stopped after 1.004s, no connection cut"
`
	got, err := ParseDrainLog(log)
	if err != nil || got.Took != 1004*time.Millisecond || got.Cut != 0 || got.Line != "stopped after 1.004s, no connection cut" {
		t.Errorf("ParseDrainLog(clean) = %+v, %v", got, err)
	}
	cut := log + `time="2026-12-02T05:51:01Z" level=error msg="stopped after 20.001s: 3 connections cut at the deadline (http 2, grpc 1): drain: deadline"` + "\n"
	got, err = ParseDrainLog(cut)
	if err != nil || got.Took != 20001*time.Millisecond || got.Cut != 3 || got.By != "http 2, grpc 1" {
		t.Errorf("ParseDrainLog(cut) = %+v, %v; want the last line: 3 cut, http 2, grpc 1", got, err)
	}
	if _, err := ParseDrainLog("serving http on 127.0.0.1:8080\n"); err == nil {
		t.Error("ParseDrainLog(no drain) = nil error, want one")
	}
}

func TestParseProcStatCPU(t *testing.T) {
	// Fields 14 and 15 (utime, stime) are 250 and 50 ticks; the command
	// name holds a space and a parenthesis.
	stat := "4242 (web app) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 1000000 500 18446744073709551615"
	got, err := ParseProcStatCPU([]byte(stat))
	if err != nil || got != 3*time.Second {
		t.Errorf("ParseProcStatCPU = %v, %v; want 3s", got, err)
	}
	if _, err := ParseProcStatCPU([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("ParseProcStatCPU(short) = nil error, want one")
	}
	if d, err := ProcCPU(1); err != nil || d < 0 {
		t.Errorf("ProcCPU(1) = %v, %v; want a duration", d, err)
	}
}

func TestParseCPUStat(t *testing.T) {
	got, err := ParseCPUStat([]byte("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"))
	if err != nil || got != 1500*time.Millisecond {
		t.Errorf("ParseCPUStat = %v, %v; want 1.5s", got, err)
	}
	if _, err := ParseCPUStat([]byte("user_usec 1\n")); err == nil {
		t.Error("ParseCPUStat(no usage_usec) = nil error, want one")
	}
}

func TestServiceDropIn(t *testing.T) {
	socks := []string{"webapp.socket", "webapp-https.socket"}
	bare := serviceDropIn([]byte("[Service]\nExecReload=/usr/bin/webapp reload\n"), socks)
	for _, want := range []string{"Slice=" + benchSlice, "Sockets=webapp.socket webapp-https.socket", "ExecReload=\nExecReload=+/usr/bin/webapp reload", "LoadCredential=tls.crt:/etc/webapp/tls.crt"} {
		if !strings.Contains(bare, want) {
			t.Errorf("serviceDropIn(a unit without them) lacks %q:\n%s", want, bare)
		}
	}
	shipped := serviceDropIn([]byte("[Service]\nSockets=webapp.socket\nExecReload=+/usr/bin/webapp reload\nLoadCredential=tls.crt:/etc/webapp/tls.crt\n"), socks)
	for _, unwanted := range []string{"Sockets=", "ExecReload=", "LoadCredential="} {
		if strings.Contains(shipped, unwanted) {
			t.Errorf("serviceDropIn(a unit with them) adds %q again:\n%s", unwanted, shipped)
		}
	}
}

// wrkOutput is a real wrk 4.1.0 run whose server went away during it.
const wrkOutput = `Running 3s test @ http://127.0.0.1:18181/nothere
  2 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.67ms    2.11ms  15.97ms   85.78%
    Req/Sec    28.86k     2.61k   32.81k    70.00%
  57638 requests in 3.01s, 12.15MB read
  Socket errors: connect 0, read 100, write 215076, timeout 0
  Non-2xx or 3xx responses: 57638
Requests/sec:  19178.09
Transfer/sec:      4.04MB
`

func TestParseWrk(t *testing.T) {
	got, err := ParseWrk([]byte(wrkOutput))
	want := WrkSummary{Requests: 57638, Took: 3010 * time.Millisecond, Read: 100, Write: 215076, Non2xx: 57638}
	if err != nil || got != want {
		t.Errorf("ParseWrk = %+v, %v; want %+v", got, err, want)
	}
	if got.Errors() != 100+215076+57638 {
		t.Errorf("Errors() = %d, want %d", got.Errors(), 100+215076+57638)
	}
	// A clean run prints neither error line.
	clean := "Running 2s test @ http://127.0.0.1:18181/\n  2 threads and 200 connections\n  130595 requests in 2.01s, 21.67MB read\nRequests/sec:  64940.91\n"
	got, err = ParseWrk([]byte(clean))
	if err != nil || got != (WrkSummary{Requests: 130595, Took: 2010 * time.Millisecond}) || got.Errors() != 0 {
		t.Errorf("ParseWrk(clean run) = %+v, %v; want 130595 requests in 2.01s, no errors", got, err)
	}
	if sum := got.Add(WrkSummary{Requests: 5, Took: time.Second, Timeout: 2}); sum.Requests != 130600 || sum.Took != 2010*time.Millisecond || sum.Errors() != 2 {
		t.Errorf("Add = %+v, want 130600 requests, 2.01s, 2 errors", sum)
	}
	if _, err := ParseWrk([]byte("Running 1m test @ http://127.0.0.1:1/\n")); err == nil {
		t.Error("ParseWrk(output without a requests line) = nil error, want one")
	}
}

func TestParseVmRSS(t *testing.T) {
	got, err := ParseVmRSS([]byte("Name:\tcat\nVmHWM:\t    2000 kB\nVmRSS:\t    1988 kB\nRssAnon:\t  100 kB\n"))
	if err != nil || got != 1988*1024 {
		t.Errorf("ParseVmRSS = %d, %v; want %d", got, err, 1988*1024)
	}
	if _, err := ParseVmRSS([]byte("Name:\tkthreadd\n")); err == nil {
		t.Error("ParseVmRSS(no VmRSS line) = nil error, want one")
	}
}

func TestParseTCPActiveOpens(t *testing.T) {
	snmp := `Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 1052117
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 220287 5096 215180 549 0 1052117 1051717 119 0 215595 0
Udp: InDatagrams NoPorts
Udp: 10 0
`
	got, err := ParseTCPActiveOpens([]byte(snmp))
	if err != nil || got != 220287 {
		t.Errorf("ParseTCPActiveOpens = %d, %v; want 220287", got, err)
	}
	if _, err := ParseTCPActiveOpens([]byte("Udp: InDatagrams\nUdp: 10\n")); err == nil {
		t.Error("ParseTCPActiveOpens(no Tcp lines) = nil error, want one")
	}
}

func TestParseDrainEvents(t *testing.T) {
	out := `{"__REALTIME_TIMESTAMP":"1780000000123456","__MONOTONIC_TIMESTAMP":"1","_BOOT_ID":"b","__CURSOR":"c1","BATON_EVENT":"drain-started","BATON_PID":"120","BATON_STOPPING":"false","BATON_CONNECTIONS":"16000"}
{"__REALTIME_TIMESTAMP":"1780000000200000","__CURSOR":"c2","BATON_EVENT":"reload-committed","BATON_PID":"120"}
{"__REALTIME_TIMESTAMP":"1780000001200000","__CURSOR":"c3","BATON_EVENT":"drain-finished","BATON_PID":"120","BATON_STOPPING":"false","BATON_DURATION_USEC":"1076543","BATON_CUT":"0"}
{"__REALTIME_TIMESTAMP":"1780000009000000","__CURSOR":"c4","BATON_EVENT":"drain-finished","BATON_PID":"135","BATON_STOPPING":"true","BATON_DURATION_USEC":"2000000","BATON_CUT":"3"}
`
	got, err := ParseDrainEvents([]byte(out))
	want := []DrainEvent{
		{Event: "drain-started", At: time.UnixMicro(1780000000123456), PID: 120, Connections: 16000},
		{Event: "drain-finished", At: time.UnixMicro(1780000001200000), PID: 120, Duration: 1076543 * time.Microsecond},
		{Event: "drain-finished", At: time.UnixMicro(1780000009000000), PID: 135, Stopping: true, Duration: 2 * time.Second, Cut: 3},
	}
	if err != nil || len(got) != len(want) {
		t.Fatalf("ParseDrainEvents = %+v, %v; want %+v", got, err, want)
	}
	for i := range want {
		if !got[i].At.Equal(want[i].At) || got[i].Event != want[i].Event || got[i].PID != want[i].PID || got[i].Stopping != want[i].Stopping ||
			got[i].Duration != want[i].Duration || got[i].Cut != want[i].Cut || got[i].Connections != want[i].Connections {
			t.Errorf("ParseDrainEvents entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := ParseDrainEvents([]byte("not json\n")); err == nil {
		t.Error("ParseDrainEvents(not JSON) = nil error, want one")
	}
}

func TestParseListenOverflows(t *testing.T) {
	netstat := `TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops
TcpExt: 0 0 1748 1748
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
`
	got, err := ParseListenOverflows([]byte(netstat))
	if err != nil || got != 1748 {
		t.Errorf("ParseListenOverflows = %d, %v; want 1748", got, err)
	}
	if _, err := ParseListenOverflows([]byte("IpExt: InNoRoutes\nIpExt: 0\n")); err == nil {
		t.Error("ParseListenOverflows(no TcpExt lines) = nil error, want one")
	}
}

func TestAcceptBacklog(t *testing.T) {
	const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:0000000C 00:00000000 00000000     0        0 1 1 ffff 100 0 0 10 0
   1: 0100007F:1F90 0100007F:A1B2 03 00000000:00000000 02:00000064 00000000     0        0 0 0 ffff
   2: 0100007F:1F90 0100007F:A1B3 01 00000000:00000000 00:00000000 00000000     0        0 2 1 ffff
   3: 0100007F:1F91 00000000:0000 0A 00000000:00000005 00:00000000 00000000     0        0 3 1 ffff
`
	q, p, ok := AcceptBacklog([]byte(tcp), 8080)
	if q != 12 || p != 1 || !ok {
		t.Errorf("AcceptBacklog(8080) = %d, %d, %v; want 12 queued, 1 pending, found", q, p, ok)
	}
	if _, _, ok := AcceptBacklog([]byte(tcp), 9090); ok {
		t.Errorf("AcceptBacklog(9090) found a listener, want none")
	}
}
