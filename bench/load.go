package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// loadResult is what one load run measured.
type loadResult struct {
	Requests   int64
	Errors     int64 // transport errors and non-200 answers
	Duration   time.Duration
	P50, P99   time.Duration
	Max        time.Duration
	StatusSeen map[int]int64
}

func (r loadResult) RPS() float64 { return float64(r.Requests) / r.Duration.Seconds() }

// runLoad drives addr with conns keep-alive HTTP/1.1 connections for d,
// cycling through the prebuilt requests. It is deliberately small: raw TCP,
// a prebuilt request per body, a minimal response reader, so the load
// generator takes as little of the machine as possible from the server.
func runLoad(addr string, conns int, d time.Duration, reqs [][]byte) (loadResult, error) {
	return runLoadAcross([]string{addr}, conns, d, reqs)
}

// runLoadAcross is runLoad with connection c going to addrs[c%len(addrs)]:
// the same total connections, spread round-robin over several servers.
func runLoadAcross(addrs []string, conns int, d time.Duration, reqs [][]byte) (loadResult, error) {
	return runLoadUntil(addrs, conns, d, 0, 0, reqs)
}

// warmLoad is runLoad for at least d and until twice as many answers as
// there are requests came back, for at most max: the connections move
// through the requests at about the same pace, so each was sent, and a
// validation cache holds the whole working set however slow the machine
// is at the time (a 3 s warm-up on a busy machine left it half cold).
func warmLoad(addr string, conns int, d, max time.Duration, reqs [][]byte) (loadResult, error) {
	return runLoadUntil([]string{addr}, conns, d, max, 2*int64(len(reqs)), reqs)
}

// runLoadUntil runs the load for d, then on until minRequests answers came
// back or max has passed (max 0: d alone).
func runLoadUntil(addrs []string, conns int, d, max time.Duration, minRequests int64, reqs [][]byte) (loadResult, error) {
	var total, errs atomic.Int64
	lat := make([][]time.Duration, conns)
	statuses := make([]map[int]int64, conns)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	start := time.Now()
	for c := range conns {
		wg.Add(1)
		statuses[c] = map[int]int64{}
		go func() {
			defer wg.Done()
			nc, err := net.Dial("tcp", addrs[c%len(addrs)])
			if err != nil {
				errs.Add(1)
				return
			}
			defer nc.Close()
			br := bufio.NewReaderSize(nc, 16<<10)
			samples := make([]time.Duration, 0, 1<<16)
			for i := c; ; i += conns {
				select {
				case <-stop:
					lat[c] = samples
					return
				default:
				}
				t0 := time.Now()
				if _, err := nc.Write(reqs[i%len(reqs)]); err != nil {
					errs.Add(1)
					lat[c] = samples
					return
				}
				status, err := readResponse(br)
				if err != nil {
					errs.Add(1)
					lat[c] = samples
					return
				}
				samples = append(samples, time.Since(t0))
				statuses[c][status]++
				if status != 200 {
					errs.Add(1)
				}
				total.Add(1)
			}
		}()
	}
	time.Sleep(d)
	for time.Since(start) < max && total.Load() < minRequests {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	res := loadResult{Requests: total.Load(), Errors: errs.Load(), Duration: time.Since(start), StatusSeen: map[int]int64{}}
	var all []time.Duration
	for c := range conns {
		all = append(all, lat[c]...)
		for s, n := range statuses[c] {
			res.StatusSeen[s] += n
		}
	}
	if len(all) == 0 {
		return res, fmt.Errorf("no request completed against %v", addrs)
	}
	slices.Sort(all)
	res.P50, res.P99, res.Max = all[len(all)/2], all[len(all)*99/100], all[len(all)-1]
	return res, nil
}

// readResponse reads one HTTP/1.1 response with a Content-Length body and
// returns its status code.
func readResponse(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, err
	}
	length := -1
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(h) <= 2 {
			break
		}
		if len(h) > 16 && bytes.EqualFold(h[:15], []byte("Content-Length:")) {
			length, err = strconv.Atoi(string(bytes.TrimSpace(h[15:])))
			if err != nil {
				return 0, err
			}
		}
	}
	if length < 0 {
		return 0, fmt.Errorf("response without Content-Length")
	}
	_, err = br.Discard(length)
	return status, err
}

// buildRequest returns a raw POST with a JSON body.
func buildRequest(host, path string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, host, len(body))
	b.Write(body)
	return b.Bytes()
}

var _ = io.EOF
