/**
 * poolstream-client: the poolstream.v1 gRPC contract for Node.js.
 *
 * Messages and the service client are generated from protos/ by ts-proto
 * (`make gen`) for @grpc/grpc-js; each proto file is one namespace here:
 *
 *   import { credentials } from "@grpc/grpc-js";
 *   import { PoolingServiceClient, poolingService } from "poolstream-client";
 *   const client = new PoolingServiceClient("127.0.0.1:50051", credentials.createInsecure());
 *   client.getServerInfo(poolingService.GetServerInfoRequest.fromPartial({}), (err, info) => { ... });
 *
 * `dist/main.js` (the `poolstream-node-client` command) is a complete example.
 */
export * as any from "./gen/google/protobuf/any";
export * as status from "./gen/google/rpc/status";
export * as payload from "./gen/poolstream/v1/payload";
export * as pooling from "./gen/poolstream/v1/pooling";
export * as poolingService from "./gen/poolstream/v1/pooling_service";
export * as tensor from "./gen/poolstream/v1/tensor";
export * as textEmbeddingV1 from "./gen/poolstream/payloads/text_embedding/v1/text_embedding";
export * as geotiffV1 from "./gen/poolstream/payloads/geotiff/v1/geotiff_segmentation";
export { PoolingServiceClient } from "./gen/poolstream/v1/pooling_service";
