// The chart's embedded pod run from the image, as a kubelet would run it
// (without a cluster): helm renders helm/gantry; the StatefulSet's pod
// spec gives the user and group, the read-only root, the volumes (the
// ConfigMap's items as read-only files, the data PVC as a directory owned
// by fsGroup, emptyDirs as tmpfs), the command (the image's entrypoint
// unless the container names one) and args; rootfs.mjs runs that from the
// unpacked image.  Listen flags move the ports to free loopback ones.
// Then: the rendered probes' paths answer, an SDK send/receive on the
// rendered config's topic and group, SIGTERM (what follows preStop) exits
// 0 within the rendered grace period.  Needs root, the image and the helm
// tools (labels image and helm).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { freePort, httpGet, waitFor, scaled } from '../integration/harness.mjs';
import { startProducer, startSimpleConsumer, receiveAll, shutdownQuietly } from '../integration/sdk_util.mjs';
import { unpackImage, runInRoot, envOf } from './rootfs.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHART = path.resolve(here, '../../helm/gantry');
const IMAGE = process.env.GANTRY_IMAGE;
const TOOLS = process.env.HELM_TOOLS;
const skip = process.getuid?.() !== 0 ? 'needs root (umoci unpack, chroot)' : false;

test('the embedded render\'s pod runs from the image: probes, SDK send/receive, SIGTERM within the grace period', { skip }, async () => {
  assert.ok(IMAGE && fs.existsSync(IMAGE), `no image archive ${IMAGE}`);
  assert.ok(TOOLS, 'HELM_TOOLS not set');
  const YAML = createRequire(path.join(TOOLS, 'package.json'))('yaml');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-chart-pod-'));
  try {
    const text = execFileSync(path.join(TOOLS, 'helm'), ['template', 'mq', CHART], { encoding: 'utf8' });
    const docs = YAML.parseAllDocuments(text).map((d) => d.toJS()).filter(Boolean);
    const sts = docs.find((d) => d.kind === 'StatefulSet');
    const cm = docs.find((d) => d.kind === 'ConfigMap');
    const pod = sts.spec.template.spec;
    const c = pod.containers[0];
    const { rootfs, imageConfig } = unpackImage(IMAGE, dir);

    const uid = pod.securityContext.runAsUser;
    const gid = pod.securityContext.runAsGroup;
    const fsGroup = pod.securityContext.fsGroup;
    const binds = [];
    const tmpfs = [];
    for (const m of c.volumeMounts) {
      const v = pod.volumes.find((x) => x.name === m.name);
      const claim = sts.spec.volumeClaimTemplates?.find((x) => x.metadata.name === m.name);
      if (v?.configMap) {
        assert.equal(v.configMap.name, cm.metadata.name);
        const host = path.join(dir, `vol-${m.name}`);
        fs.mkdirSync(host);
        for (const it of v.configMap.items) fs.writeFileSync(path.join(host, it.path), cm.data[it.key]);
        binds.push({ host, target: m.mountPath, readOnly: true });
      } else if (v?.emptyDir) {
        tmpfs.push(m.mountPath);
      } else if (claim) {
        const host = path.join(dir, `pvc-${m.name}`);
        fs.mkdirSync(host);
        fs.chownSync(host, 0, fsGroup); // what the kubelet does for fsGroup
        fs.chmodSync(host, 0o2775);
        binds.push({ host, target: m.mountPath });
      } else {
        assert.fail(`volume ${m.name}: not a ConfigMap, emptyDir or claim in the default render`);
      }
    }
    const http = c.ports.find((p) => p.name === 'http');
    assert.equal(c.readinessProbe.httpGet.port, 'http');
    const grpcPort = await freePort();
    const httpPort = await freePort();
    const amqpPort = await freePort();
    const argv = [...(c.command ?? imageConfig.config.Entrypoint), ...c.args,
      '--grpc-listen', `127.0.0.1:${grpcPort}`, '--http-listen', `127.0.0.1:${httpPort}`,
      '--amqp-listen', `127.0.0.1:${amqpPort}`];
    assert.equal(http.containerPort, 5557);
    const run = runInRoot({
      rootfs, uid, gid, argv, logPath: path.join(dir, 'gantry.log'),
      env: { ...envOf(imageConfig.config.Env), ...Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value])) },
      readOnlyRoot: c.securityContext.readOnlyRootFilesystem, binds, tmpfs,
    });
    let exitInfo = null;
    run.exited.then((x) => { exitInfo = x; });
    let producer;
    let consumer;
    let stopAt;
    try {
      await waitFor(async () => {
        if (exitInfo) throw new Error(`the pod's gantry exited ${JSON.stringify(exitInfo)}:\n${run.log()}`);
        return (await httpGet(httpPort, c.readinessProbe.httpGet.path)).status === 200;
      }, 30000, 'the readiness probe passes');
      for (const pr of [c.livenessProbe, c.startupProbe]) {
        assert.equal((await httpGet(httpPort, pr.httpGet.path)).status, 200, pr.httpGet.path);
      }
      const cfg = YAML.parse(cm.data['gantry.yaml']);
      const topic = cfg.topics[0].name;
      const group = cfg.groups[0].name;
      const g = { endpoint: `127.0.0.1:${grpcPort}` };
      consumer = await startSimpleConsumer(g, group, topic);
      producer = await startProducer(g, [topic]);
      const sent = await producer.send({ topic, body: Buffer.from('pod from the chart'), tag: 'pod' });
      const got = await receiveAll(consumer, 1, 20000);
      assert.ok(got.some((m) => m.messageId === sent.messageId), 'received what was sent');
    } finally {
      await shutdownQuietly(producer, consumer);
      stopAt = Date.now();
      if (!exitInfo) run.proc.kill('SIGTERM');
    }
    const graceMs = (pod.terminationGracePeriodSeconds - (c.lifecycle?.preStop?.sleep?.seconds ?? 0)) * 1000;
    const killer = setTimeout(() => run.proc.kill('SIGKILL'), scaled(graceMs));
    const info = await run.exited;
    clearTimeout(killer);
    assert.deepEqual(info, { code: 0, signal: null },
      `exit after SIGTERM (grace ${graceMs} ms after preStop, took ${Date.now() - stopAt} ms):\n${run.log()}`);
    const pvc = path.join(dir, 'pvc-data');
    assert.ok(fs.readdirSync(pvc).includes('commitlog'), 'the store wrote to the PVC');
    assert.equal(fs.statSync(path.join(pvc, 'commitlog')).uid, uid);
  } finally {
    if (!process.env.GANTRY_KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true });
  }
});
