// gantry.store.v1.Store for tests that talk to gantry-store nodes directly
// (the cluster tests): the service stub from the repository's .proto, and
// one call on a fresh channel.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { require, scaled } from './harness.mjs';

export const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const PROTO = path.resolve(path.dirname(fileURLToPath(import.meta.url)),
  '../../apis/gantry/store/v1/store.proto');

export const Store = grpc.loadPackageDefinition(protoLoader.loadSync(PROTO, {
  keepCase: true, longs: Number, enums: String, defaults: true,
})).gantry.store.v1.Store;

// One call of `method` at endpoint HOST:PORT, deadline scaled(ms) ->
// { err: the gRPC error or null, resp, at: when it ended (ms) }.
export function storeCall(endpoint, method, req, ms = 10000) {
  const c = new Store(endpoint, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    c[method](req, { deadline: Date.now() + scaled(ms) }, (err, resp) => {
      c.close();
      resolve({ err, resp, at: Date.now() });
    });
  });
}
