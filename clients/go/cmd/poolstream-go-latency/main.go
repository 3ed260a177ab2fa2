// Command poolstream-go-latency measures single-request latency from a Go client:
// for each text read from stdin (one per line) it makes sequential calls of one
// prompt, and prints one JSON object with the per-call figures in milliseconds:
//
//	{"result_ms":[...], "closed_ms":[...], "unary_ms":[...], "rtt_ms":[...],
//	 "inference_ms":[...], "unary_inference_ms":[...]}
//
//   - result_ms: Encode, until its one result arrived;
//   - closed_ms: Encode, until the stream closed (status received);
//   - unary_ms: EncodeAll, until its response arrived;
//   - rtt_ms: grpc.health.v1.Health/Check, the bare round trip;
//   - inference_ms, unary_inference_ms: the server's poolstream-inference-time-ms trailer.
//
// bench/bench_text.py runs it beside its Python client, so the server's overhead
// can be read without the Python client's own cost. Build: `make client-build`.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	poolstreamv1 "github.com/poolstream/poolstream/clients/go/gen/poolstream/v1"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "server address (host:port)")
	warmup := flag.Int("warmup", 5, "unrecorded calls of each kind first")
	flag.Parse()
	if err := run(*addr, *warmup); err != nil {
		fmt.Fprintln(os.Stderr, "poolstream-go-latency:", err)
		os.Exit(1)
	}
}

func run(addr string, warmup int) error {
	var texts []string
	scanner := bufio.NewScanner(os.Stdin)
	for scanner.Scan() {
		texts = append(texts, scanner.Text())
	}
	if len(texts) == 0 {
		return fmt.Errorf("no texts on stdin")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return fmt.Errorf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	client := poolstreamv1.NewPoolingServiceClient(conn)
	health := healthpb.NewHealthClient(conn)

	out := map[string][]float64{}
	record := func(key string, d time.Duration) { out[key] = append(out[key], float64(d.Nanoseconds())/1e6) }
	for i := 0; i < warmup+len(texts); i++ {
		text := texts[i%len(texts)]
		rec := i >= warmup
		prompts := []*poolstreamv1.Prompt{{Input: &poolstreamv1.Prompt_Text{Text: text}}}

		start := time.Now()
		stream, err := client.Encode(ctx, &poolstreamv1.EncodeRequest{Prompts: prompts})
		if err != nil {
			return fmt.Errorf("Encode: %v", err)
		}
		var result time.Duration
		for {
			resp, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("Encode: %v", err)
			}
			if e := resp.GetError(); e != nil {
				return fmt.Errorf("Encode: prompt error %d %s", e.GetCode(), e.GetMessage())
			}
			result = time.Since(start)
		}
		closed := time.Since(start)
		inference := trailerMs(stream.Trailer())

		var trailer metadata.MD
		start = time.Now()
		if _, err := client.EncodeAll(ctx, &poolstreamv1.EncodeAllRequest{Prompts: prompts}, grpc.Trailer(&trailer)); err != nil {
			return fmt.Errorf("EncodeAll: %v", err)
		}
		unary := time.Since(start)

		start = time.Now()
		if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			return fmt.Errorf("Check: %v", err)
		}
		rtt := time.Since(start)
		if rec {
			record("result_ms", result)
			record("closed_ms", closed)
			record("unary_ms", unary)
			record("rtt_ms", rtt)
			out["inference_ms"] = append(out["inference_ms"], inference)
			out["unary_inference_ms"] = append(out["unary_inference_ms"], trailerMs(trailer))
		}
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// trailerMs reads the server's poolstream-inference-time-ms trailer (-1 when absent).
func trailerMs(md metadata.MD) float64 {
	if v := md.Get("poolstream-inference-time-ms"); len(v) > 0 {
		if f, err := strconv.ParseFloat(v[0], 64); err == nil {
			return f
		}
	}
	return -1
}
