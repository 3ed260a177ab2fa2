// Command poolstream-go-client is an example Go client for poolstream.
//
// It calls GetServerInfo, Encode (server stream) and ProcessStream with the
// text_embedding plugin's typed payload (a TextEmbeddingRequest packed in an
// Any), and prints one JSON object per line:
//
//	{"kind":"server_info", "info":{...}}
//	{"kind":"encode", "index":0, "text":"...", "shape":[384], "embedding":[...]}
//	{"kind":"process_chunk", "index":0, "completed":1, "total":2}
//	{"kind":"process_result", "texts":[...], "shape":[2,384], "embeddings":[[...]], "similarity":[[...]]}
//
// It exits non-zero when any call fails or a prompt reports an error.
//
// Build (GOPATH mode, Debian's Go packages, see mk/clients.mk):
//
//	GO111MODULE=off GOPATH=$REPO/.gopath:/usr/share/gocode GOPROXY=off \
//	    go build -o clients/go/bin/poolstream-go-client github.com/poolstream/poolstream/clients/go/cmd/poolstream-go-client
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	textembeddingv1 "github.com/poolstream/poolstream/clients/go/gen/poolstream/payloads/text_embedding/v1"
	poolstreamv1 "github.com/poolstream/poolstream/clients/go/gen/poolstream/v1"
)

type textList []string

func (t *textList) String() string     { return strings.Join(*t, ",") }
func (t *textList) Set(v string) error { *t = append(*t, v); return nil }

func main() {
	os.Exit(run())
}

func run() int {
	addr := flag.String("addr", "127.0.0.1:50051", "server address (host:port)")
	timeout := flag.Float64("timeout", 60, "deadline for the whole run, in seconds")
	skipProcess := flag.Bool("skip-process", false, "do not call ProcessStream (server without a plugin)")
	var texts textList
	flag.Var(&texts, "text", "a text to embed (repeatable; positional arguments are texts too)")
	flag.Parse()
	texts = append(texts, flag.Args()...)
	if len(texts) == 0 {
		texts = textList{"Hello, world!", "Pooling models turn text into vectors."}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*timeout*float64(time.Second)))
	defer cancel()
	conn, err := grpc.DialContext(ctx, *addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return fail("dial %s: %v", *addr, err)
	}
	defer conn.Close()
	client := poolstreamv1.NewPoolingServiceClient(conn)
	out := json.NewEncoder(os.Stdout)

	// GetServerInfo
	info, err := client.GetServerInfo(ctx, &poolstreamv1.GetServerInfoRequest{})
	if err != nil {
		return fail("GetServerInfo: %v", err)
	}
	infoJSON, err := protojson.Marshal(info)
	if err != nil {
		return fail("GetServerInfo: marshal: %v", err)
	}
	if err := out.Encode(map[string]interface{}{"kind": "server_info", "info": json.RawMessage(infoJSON)}); err != nil {
		return fail("write: %v", err)
	}

	// Encode: one streamed result per prompt, in completion order.
	prompts := make([]*poolstreamv1.Prompt, len(texts))
	for i, t := range texts {
		prompts[i] = &poolstreamv1.Prompt{Input: &poolstreamv1.Prompt_Text{Text: t}}
	}
	stream, err := client.Encode(ctx, &poolstreamv1.EncodeRequest{RequestId: "go-encode", Prompts: prompts})
	if err != nil {
		return fail("Encode: %v", err)
	}
	failed := false
	received := 0
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail("Encode: %v", err)
		}
		received++
		if e := resp.GetError(); e != nil {
			failed = true
			_ = out.Encode(map[string]interface{}{"kind": "encode_error", "index": resp.GetIndex(), "code": e.GetCode(), "message": e.GetMessage()})
			continue
		}
		tensor := resp.GetOutput().GetOutputs().GetData()
		values, err := decodeTensor(tensor)
		if err != nil {
			return fail("Encode: prompt %d: %v", resp.GetIndex(), err)
		}
		if err := out.Encode(map[string]interface{}{
			"kind":       "encode",
			"index":      resp.GetIndex(),
			"text":       texts[resp.GetIndex()],
			"request_id": resp.GetOutput().GetRequestId(),
			"shape":      tensor.GetShape(),
			"embedding":  values,
		}); err != nil {
			return fail("write: %v", err)
		}
	}
	if received != len(texts) {
		return fail("Encode: got %d results for %d prompts", received, len(texts))
	}

	if !*skipProcess {
		if code := processStream(ctx, client, texts, out); code != 0 {
			return code
		}
	}
	if failed {
		return 1
	}
	return 0
}

// processStream sends the text_embedding plugin's typed payload and prints
// the streamed chunks and the unpacked TextEmbeddingResponse.
func processStream(ctx context.Context, client poolstreamv1.PoolingServiceClient, texts []string, out *json.Encoder) int {
	payload, err := anypb.New(&textembeddingv1.TextEmbeddingRequest{Texts: texts, Similarity: true})
	if err != nil {
		return fail("pack TextEmbeddingRequest: %v", err)
	}
	stream, err := client.ProcessStream(ctx, &poolstreamv1.ProcessStreamRequest{
		RequestId: "go-process",
		Data:      &poolstreamv1.PluginPayload{Kind: &poolstreamv1.PluginPayload_Typed{Typed: payload}},
	})
	if err != nil {
		return fail("ProcessStream: %v", err)
	}
	var result *poolstreamv1.ProcessResponse
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail("ProcessStream: %v", err)
		}
		switch e := ev.GetEvent().(type) {
		case *poolstreamv1.ProcessStreamResponse_Chunk:
			_ = out.Encode(map[string]interface{}{"kind": "process_chunk", "index": e.Chunk.GetIndex(),
				"completed": e.Chunk.GetCompleted(), "total": e.Chunk.GetTotal()})
		case *poolstreamv1.ProcessStreamResponse_Progress:
			_ = out.Encode(map[string]interface{}{"kind": "process_progress",
				"completed": e.Progress.GetCompleted(), "total": e.Progress.GetTotal()})
		case *poolstreamv1.ProcessStreamResponse_Result:
			result = e.Result
		}
	}
	if result == nil {
		return fail("ProcessStream: the stream ended without a result")
	}
	typed := result.GetData().GetTyped()
	if typed == nil {
		return fail("ProcessStream: expected a typed result, got %v", result.GetData())
	}
	var resp textembeddingv1.TextEmbeddingResponse
	if err := typed.UnmarshalTo(&resp); err != nil {
		return fail("ProcessStream: unpack %s: %v", typed.GetTypeUrl(), err)
	}
	emb, err := decodeTensor(resp.GetEmbeddings())
	if err != nil {
		return fail("ProcessStream: embeddings: %v", err)
	}
	record := map[string]interface{}{
		"kind":         "process_result",
		"request_id":   result.GetRequestId(),
		"type_url":     typed.GetTypeUrl(),
		"texts":        texts,
		"shape":        resp.GetEmbeddings().GetShape(),
		"embeddings":   rows(emb, resp.GetEmbeddings().GetShape()),
		"token_counts": resp.GetTokenCounts(),
		"prompt_count": result.GetUsage().GetPromptCount(),
	}
	if resp.GetSimilarity() != nil {
		sim, err := decodeTensor(resp.GetSimilarity())
		if err != nil {
			return fail("ProcessStream: similarity: %v", err)
		}
		record["similarity"] = rows(sim, resp.GetSimilarity().GetShape())
	}
	if err := out.Encode(record); err != nil {
		return fail("write: %v", err)
	}
	return 0
}

// rows splits a flat row-major matrix into rows (a 1-D tensor is one row).
func rows(values []float64, shape []int64) [][]float64 {
	if len(shape) < 2 || shape[len(shape)-1] == 0 {
		return [][]float64{values}
	}
	n := int(shape[len(shape)-1])
	var out [][]float64
	for i := 0; i+n <= len(values); i += n {
		out = append(out, values[i:i+n])
	}
	return out
}

// decodeTensor returns a Tensor's elements as float64 (little-endian,
// row-major; see poolstream/v1/tensor.proto).
func decodeTensor(t *poolstreamv1.Tensor) ([]float64, error) {
	if t == nil {
		return nil, fmt.Errorf("no tensor")
	}
	n := 1
	for _, d := range t.GetShape() {
		n *= int(d)
	}
	data := t.GetData()
	if len(data) == 0 && len(t.GetFloatValues()) > 0 {
		out := make([]float64, len(t.GetFloatValues()))
		for i, v := range t.GetFloatValues() {
			out[i] = float64(v)
		}
		return out, nil
	}
	size := map[poolstreamv1.DType]int{
		poolstreamv1.DType_DTYPE_FLOAT32: 4, poolstreamv1.DType_DTYPE_FLOAT16: 2, poolstreamv1.DType_DTYPE_BFLOAT16: 2,
		poolstreamv1.DType_DTYPE_FLOAT64: 8, poolstreamv1.DType_DTYPE_INT8: 1, poolstreamv1.DType_DTYPE_UINT8: 1,
		poolstreamv1.DType_DTYPE_INT16: 2, poolstreamv1.DType_DTYPE_INT32: 4, poolstreamv1.DType_DTYPE_INT64: 8,
		poolstreamv1.DType_DTYPE_BOOL: 1,
	}
	out := make([]float64, n)
	if t.GetDtype() == poolstreamv1.DType_DTYPE_BINARY {
		if len(data) != (n+7)/8 {
			return nil, fmt.Errorf("BINARY tensor of %d elements has %d bytes", n, len(data))
		}
		for i := range out {
			out[i] = float64((data[i/8] >> (7 - uint(i%8))) & 1)
		}
		return out, nil
	}
	itemsize, ok := size[t.GetDtype()]
	if !ok {
		return nil, fmt.Errorf("unsupported dtype %v", t.GetDtype())
	}
	if len(data) != n*itemsize {
		return nil, fmt.Errorf("%v tensor of shape %v has %d bytes, want %d", t.GetDtype(), t.GetShape(), len(data), n*itemsize)
	}
	le := binary.LittleEndian
	for i := range out {
		b := data[i*itemsize : (i+1)*itemsize]
		switch t.GetDtype() {
		case poolstreamv1.DType_DTYPE_FLOAT32:
			out[i] = float64(math.Float32frombits(le.Uint32(b)))
		case poolstreamv1.DType_DTYPE_FLOAT16:
			out[i] = float64(halfToFloat(le.Uint16(b)))
		case poolstreamv1.DType_DTYPE_BFLOAT16:
			out[i] = float64(math.Float32frombits(uint32(le.Uint16(b)) << 16))
		case poolstreamv1.DType_DTYPE_FLOAT64:
			out[i] = math.Float64frombits(le.Uint64(b))
		case poolstreamv1.DType_DTYPE_INT8:
			out[i] = float64(int8(b[0]))
		case poolstreamv1.DType_DTYPE_UINT8, poolstreamv1.DType_DTYPE_BOOL:
			out[i] = float64(b[0])
		case poolstreamv1.DType_DTYPE_INT16:
			out[i] = float64(int16(le.Uint16(b)))
		case poolstreamv1.DType_DTYPE_INT32:
			out[i] = float64(int32(le.Uint32(b)))
		case poolstreamv1.DType_DTYPE_INT64:
			out[i] = float64(int64(le.Uint64(b)))
		}
	}
	return out, nil
}

// halfToFloat converts IEEE 754 binary16 bits to a float32.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		f := float32(frac) / 1024 / 16384
		if sign != 0 {
			return -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	default:
		return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
	}
}

func fail(format string, args ...interface{}) int {
	fmt.Fprintf(os.Stderr, "poolstream-go-client: "+format+"\n", args...)
	return 1
}
