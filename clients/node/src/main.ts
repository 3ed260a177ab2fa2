/**
 * poolstream-node-client: an example Node.js client for poolstream.
 *
 * Calls GetServerInfo, Encode (server stream) and ProcessStream with the
 * text_embedding plugin's typed payload (a TextEmbeddingRequest packed in an
 * Any), and prints one JSON object per line, like the Go example:
 *
 *   {"kind":"server_info","info":{...}}
 *   {"kind":"encode","index":0,"text":"...","shape":[384],"embedding":[...]}
 *   {"kind":"process_chunk","index":0,"completed":1,"total":2}
 *   {"kind":"process_result","texts":[...],"shape":[2,384],"embeddings":[[...]],"similarity":[[...]]}
 *
 * Exits non-zero when a call fails or a prompt reports an error.
 *
 *   npm ci && npm run build
 *   node dist/main.js --addr 127.0.0.1:50051 "a sentence" "another one"
 */
import { credentials, Metadata, ServiceError } from "@grpc/grpc-js";
import { Any } from "./gen/google/protobuf/any";
import {
  TextEmbeddingRequest,
  TextEmbeddingResponse,
} from "./gen/poolstream/payloads/text_embedding/v1/text_embedding";
import {
  EncodeRequest,
  EncodeResponse,
  GetServerInfoResponse,
  PoolingServiceClient,
  ProcessResponse,
  ProcessStreamRequest,
  ProcessStreamResponse,
} from "./gen/poolstream/v1/pooling_service";
import { DType, dTypeToJSON, Tensor } from "./gen/poolstream/v1/tensor";

const TYPE_URL_PREFIX = "type.googleapis.com/";
const REQUEST_TYPE = "poolstream.payloads.text_embedding.v1.TextEmbeddingRequest";
const RESPONSE_TYPE = "poolstream.payloads.text_embedding.v1.TextEmbeddingResponse";

interface Options {
  addr: string;
  texts: string[];
  timeoutMs: number;
  skipProcess: boolean;
}

function parseArgs(argv: string[]): Options {
  const opts: Options = { addr: "127.0.0.1:50051", texts: [], timeoutMs: 60_000, skipProcess: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      const eq = a.indexOf("=");
      if (eq >= 0) return a.slice(eq + 1);
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--addr" || a.startsWith("--addr=")) opts.addr = value();
    else if (a === "--text" || a.startsWith("--text=")) opts.texts.push(value());
    else if (a === "--timeout" || a.startsWith("--timeout=")) opts.timeoutMs = Number(value()) * 1000;
    else if (a === "--skip-process") opts.skipProcess = true;
    else if (a === "-h" || a === "--help") {
      process.stdout.write(
        "usage: poolstream-node-client [--addr HOST:PORT] [--timeout SECONDS] [--skip-process] [--text T]... [TEXT]...\n",
      );
      process.exit(0);
    } else if (a.startsWith("--")) throw new Error(`unknown option ${a}`);
    else opts.texts.push(a);
  }
  if (opts.texts.length === 0) opts.texts = ["Hello, world!", "Pooling models turn text into vectors."];
  return opts;
}

const ITEMSIZE: Partial<Record<DType, number>> = {
  [DType.DTYPE_FLOAT32]: 4,
  [DType.DTYPE_FLOAT16]: 2,
  [DType.DTYPE_BFLOAT16]: 2,
  [DType.DTYPE_FLOAT64]: 8,
  [DType.DTYPE_INT8]: 1,
  [DType.DTYPE_UINT8]: 1,
  [DType.DTYPE_INT16]: 2,
  [DType.DTYPE_INT32]: 4,
  [DType.DTYPE_INT64]: 8,
  [DType.DTYPE_BOOL]: 1,
};

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** A Tensor's elements as numbers (little-endian, row-major; see tensor.proto). */
export function decodeTensor(t: Tensor | undefined): number[] {
  if (!t) throw new Error("no tensor");
  const n = t.shape.reduce((a, b) => a * b, 1);
  const data = t.data;
  if (data.length === 0 && t.floatValues.length > 0) return [...t.floatValues];
  if (t.dtype === DType.DTYPE_BINARY) {
    if (data.length !== Math.ceil(n / 8)) throw new Error(`BINARY tensor of ${n} elements has ${data.length} bytes`);
    return Array.from({ length: n }, (_, i) => (data[i >> 3] >> (7 - (i & 7))) & 1);
  }
  const size = ITEMSIZE[t.dtype];
  if (size === undefined) throw new Error(`unsupported dtype ${dTypeToJSON(t.dtype)}`);
  if (data.length !== n * size) {
    throw new Error(`${dTypeToJSON(t.dtype)} tensor of shape [${t.shape}] has ${data.length} bytes, want ${n * size}`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const o = i * size;
    switch (t.dtype) {
      case DType.DTYPE_FLOAT32: out[i] = view.getFloat32(o, true); break;
      case DType.DTYPE_FLOAT16: out[i] = halfToFloat(view.getUint16(o, true)); break;
      case DType.DTYPE_BFLOAT16: {
        const b = new DataView(new ArrayBuffer(4));
        b.setUint32(0, view.getUint16(o, true) << 16, true);
        out[i] = b.getFloat32(0, true);
        break;
      }
      case DType.DTYPE_FLOAT64: out[i] = view.getFloat64(o, true); break;
      case DType.DTYPE_INT8: out[i] = view.getInt8(o); break;
      case DType.DTYPE_UINT8: case DType.DTYPE_BOOL: out[i] = view.getUint8(o); break;
      case DType.DTYPE_INT16: out[i] = view.getInt16(o, true); break;
      case DType.DTYPE_INT32: out[i] = view.getInt32(o, true); break;
      case DType.DTYPE_INT64: out[i] = Number(view.getBigInt64(o, true)); break;
    }
  }
  return out;
}

function rows(values: number[], shape: number[]): number[][] {
  const n = shape.length >= 2 ? shape[shape.length - 1] : values.length;
  if (n === 0) return [values];
  const out: number[][] = [];
  for (let i = 0; i + n <= values.length; i += n) out.push(values.slice(i, i + n));
  return out;
}

function emit(record: object): void {
  process.stdout.write(JSON.stringify(record) + "\n");
}

function deadline(opts: Options): Date {
  return new Date(Date.now() + opts.timeoutMs);
}

function getServerInfo(client: PoolingServiceClient, opts: Options): Promise<GetServerInfoResponse> {
  return new Promise((resolve, reject) => {
    client.getServerInfo({}, new Metadata(), { deadline: deadline(opts) }, (err: ServiceError | null, res?: GetServerInfoResponse) =>
      err || !res ? reject(err ?? new Error("no response")) : resolve(res),
    );
  });
}

/** Runs Encode; returns the number of prompts that reported an error. */
function encode(client: PoolingServiceClient, opts: Options): Promise<number> {
  return new Promise((resolve, reject) => {
    const prompts = opts.texts.map((text) => ({ text }));
    const stream = client.encode(
      EncodeRequest.fromPartial({ requestId: "node-encode", prompts }),
      { deadline: deadline(opts) },
    );
    let errors = 0;
    let received = 0;
    stream.on("data", (resp: EncodeResponse) => {
      received++;
      if (resp.error) {
        errors++;
        emit({ kind: "encode_error", index: resp.index, code: resp.error.code, message: resp.error.message });
        return;
      }
      const tensor = resp.output?.outputs?.data;
      try {
        emit({
          kind: "encode",
          index: resp.index,
          text: opts.texts[resp.index],
          request_id: resp.output?.requestId,
          shape: tensor?.shape,
          embedding: decodeTensor(tensor),
        });
      } catch (e) {
        stream.cancel();
        reject(e);
      }
    });
    stream.on("error", reject);
    stream.on("end", () =>
      received === opts.texts.length
        ? resolve(errors)
        : reject(new Error(`Encode: got ${received} results for ${opts.texts.length} prompts`)),
    );
  });
}

function processStream(client: PoolingServiceClient, opts: Options): Promise<void> {
  const payload = TextEmbeddingRequest.fromPartial({ texts: opts.texts, similarity: true });
  const typed = Any.fromPartial({
    typeUrl: TYPE_URL_PREFIX + REQUEST_TYPE,
    value: Buffer.from(TextEmbeddingRequest.encode(payload).finish()),
  });
  return new Promise((resolve, reject) => {
    const stream = client.processStream(
      ProcessStreamRequest.fromPartial({ requestId: "node-process", data: { typed } }),
      { deadline: deadline(opts) },
    );
    let result: ProcessResponse | undefined;
    stream.on("data", (ev: ProcessStreamResponse) => {
      if (ev.chunk) emit({ kind: "process_chunk", index: ev.chunk.index, completed: ev.chunk.completed, total: ev.chunk.total });
      else if (ev.progress) emit({ kind: "process_progress", completed: ev.progress.completed, total: ev.progress.total });
      else if (ev.result) result = ev.result;
    });
    stream.on("error", reject);
    stream.on("end", () => {
      try {
        if (!result) throw new Error("ProcessStream: the stream ended without a result");
        const any = result.data?.typed;
        if (!any) throw new Error(`ProcessStream: expected a typed result, got ${JSON.stringify(result.data)}`);
        if (any.typeUrl !== TYPE_URL_PREFIX + RESPONSE_TYPE) {
          throw new Error(`ProcessStream: unexpected result type ${any.typeUrl}`);
        }
        const resp = TextEmbeddingResponse.decode(any.value);
        const record: Record<string, unknown> = {
          kind: "process_result",
          request_id: result.requestId,
          type_url: any.typeUrl,
          texts: opts.texts,
          shape: resp.embeddings?.shape,
          embeddings: rows(decodeTensor(resp.embeddings), resp.embeddings?.shape ?? []),
          token_counts: resp.tokenCounts,
          prompt_count: result.usage?.promptCount,
        };
        if (resp.similarity) record.similarity = rows(decodeTensor(resp.similarity), resp.similarity.shape);
        emit(record);
        resolve();
      } catch (e) {
        reject(e);
      }
    });
  });
}

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  const client = new PoolingServiceClient(opts.addr, credentials.createInsecure());
  try {
    const info = await getServerInfo(client, opts);
    emit({ kind: "server_info", info: GetServerInfoResponse.toJSON(info) });
    const errors = await encode(client, opts);
    if (!opts.skipProcess) await processStream(client, opts);
    return errors > 0 ? 1 : 0;
  } finally {
    client.close();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const e = err as Partial<ServiceError>;
    process.stderr.write(`poolstream-node-client: ${e.code !== undefined ? `code ${e.code}: ` : ""}${e.message ?? String(err)}\n`);
    process.exit(1);
  },
);
