// Command poolstream-go-load drives a server with single-text calls from many
// goroutines over several connections, for a fixed time, and prints one JSON
// object: {"calls", "errors", "seconds", "calls_per_s", "p50_ms", "p99_ms"}.
//
// A cheap load generator: the client's own cost per call is a fraction of the
// server's, so the server (its front ends) is what the figures measure.
// Several connections, so that front ends sharing a port with SO_REUSEPORT
// (--api-server-count N) each get some. bench/bench_frontends.py runs it.
// Build: `make client-build`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	poolstreamv1 "github.com/poolstream/poolstream/clients/go/gen/poolstream/v1"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "server address (host:port)")
	concurrency := flag.Int("concurrency", 64, "calls in flight")
	conns := flag.Int("conns", 8, "connections (the calls are spread over them)")
	duration := flag.Duration("duration", 15*time.Second, "how long to send calls")
	warmup := flag.Duration("warmup", 2*time.Second, "unrecorded load first")
	texts := flag.Int("texts", 1, "texts per call")
	flag.Parse()
	if err := run(*addr, *concurrency, *conns, *duration, *warmup, *texts); err != nil {
		fmt.Fprintln(os.Stderr, "poolstream-go-load:", err)
		os.Exit(1)
	}
}

func run(addr string, concurrency, nconns int, duration, warmup time.Duration, ntexts int) error {
	ctx, cancel := context.WithTimeout(context.Background(), warmup+duration+time.Minute)
	defer cancel()
	clients := make([]poolstreamv1.PoolingServiceClient, nconns)
	for i := range clients {
		// WithNoProxy-free plain dial; each Dial is its own TCP connection.
		conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
		if err != nil {
			return fmt.Errorf("dial %s: %v", addr, err)
		}
		defer conn.Close()
		clients[i] = poolstreamv1.NewPoolingServiceClient(conn)
	}
	var calls, errors int64
	var recording int32
	var mu sync.Mutex
	var latencies []float64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			client := clients[w%nconns]
			var local []float64
			for i := 0; ; i++ {
				select {
				case <-stop:
					mu.Lock()
					latencies = append(latencies, local...)
					mu.Unlock()
					return
				default:
				}
				prompts := make([]*poolstreamv1.Prompt, ntexts)
				for j := range prompts {
					text := fmt.Sprintf("worker %d sentence %d part %d about load and front ends", w, i, j)
					prompts[j] = &poolstreamv1.Prompt{Input: &poolstreamv1.Prompt_Text{Text: text}}
				}
				start := time.Now()
				_, err := client.EncodeAll(ctx, &poolstreamv1.EncodeAllRequest{Prompts: prompts})
				if atomic.LoadInt32(&recording) == 1 {
					if err != nil {
						atomic.AddInt64(&errors, 1)
					} else {
						atomic.AddInt64(&calls, 1)
						local = append(local, float64(time.Since(start).Nanoseconds())/1e6)
					}
				}
			}
		}(w)
	}
	time.Sleep(warmup)
	atomic.StoreInt32(&recording, 1)
	begin := time.Now()
	time.Sleep(duration)
	atomic.StoreInt32(&recording, 0)
	elapsed := time.Since(begin).Seconds()
	close(stop)
	wg.Wait()
	sort.Float64s(latencies)
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(p*float64(len(latencies)-1))]
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"calls": calls, "errors": errors, "seconds": elapsed, "calls_per_s": float64(calls) / elapsed,
		"p50_ms": pct(0.5), "p99_ms": pct(0.99),
	})
}
