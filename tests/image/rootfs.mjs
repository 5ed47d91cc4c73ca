// Runs the OCI image (scripts/build-image) without a container runtime:
// unpackImage() unpacks the archive with umoci; runInRoot() starts a
// command from the unpacked root under chroot, as a given user, in a
// private mount namespace that gets what a runtime gives a container:
// /dev, /proc, optionally a read-only root, bind mounts for volumes and
// tmpfs mounts.  The command's PID is the spawned process's (sh and
// chroot exec it).  Needs root.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

function readBlob(layout, digest) {
  const [alg, hex] = digest.split(':');
  return JSON.parse(fs.readFileSync(path.join(layout, 'blobs', alg, hex), 'utf8'));
}

// Unpacks `archive` (an OCI archive with one image) under `dir`.
// Returns {rootfs, imageConfig (the OCI image config), runtimeConfig
// (umoci's runtime config.json: process.args, user, env, cwd)}.
export function unpackImage(archive, dir) {
  const layout = path.join(dir, 'layout');
  fs.mkdirSync(layout, { recursive: true });
  execFileSync('tar', ['-C', layout, '-xf', archive]);
  const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8'));
  if (index.manifests.length !== 1) throw new Error(`${archive}: ${index.manifests.length} images`);
  const tag = index.manifests[0].annotations['org.opencontainers.image.ref.name'];
  const imageConfig = readBlob(layout, readBlob(layout, index.manifests[0].digest).config.digest);
  const bundle = path.join(dir, 'bundle');
  execFileSync('umoci', ['unpack', '--image', `${layout}:${tag}`, bundle], { stdio: 'pipe' });
  const runtimeConfig = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8'));
  const rootfs = path.join(bundle, 'rootfs');
  for (const d of ['dev', 'proc']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
  return { rootfs, imageConfig, runtimeConfig };
}

const quote = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;

// opts: {rootfs, uid, gid, argv, env, logPath, readOnlyRoot,
//        binds: [{host, target, readOnly}], tmpfs: [target]}.
// Returns {proc, pid, exited (promise of {code, signal}), log()}.
export function runInRoot(opts) {
  const r = opts.rootfs;
  const cmds = ['set -e', `mount --bind ${quote(r)} ${quote(r)}`,
    `mount --rbind /dev ${quote(`${r}/dev`)}`, `mount -t proc proc ${quote(`${r}/proc`)}`];
  for (const b of opts.binds ?? []) {
    const t = path.join(r, b.target);
    if (b.file) {
      if (!fs.existsSync(t)) fs.writeFileSync(t, '');
    } else {
      fs.mkdirSync(t, { recursive: true });
    }
    cmds.push(`mount --bind ${quote(b.host)} ${quote(t)}`);
    if (b.readOnly) cmds.push(`mount -o remount,bind,ro ${quote(t)}`);
  }
  for (const t of opts.tmpfs ?? []) {
    fs.mkdirSync(path.join(r, t), { recursive: true });
    cmds.push(`mount -t tmpfs -o mode=1777,size=64m tmpfs ${quote(path.join(r, t))}`);
  }
  if (opts.readOnlyRoot) cmds.push(`mount -o remount,bind,ro ${quote(r)}`);
  cmds.push(`exec chroot --userspec=${opts.uid}:${opts.gid} ${quote(r)} ${opts.argv.map(quote).join(' ')}`);
  const logFd = fs.openSync(opts.logPath, 'a');
  const proc = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', cmds.join('; ')], {
    stdio: ['ignore', logFd, logFd],
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...(opts.env ?? {}) },
  });
  fs.closeSync(logFd);
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return { proc, pid: proc.pid, exited, log: () => fs.readFileSync(opts.logPath, 'utf8') };
}

// The image's environment ("K=V" list) as an object.
export function envOf(list = []) {
  return Object.fromEntries(list.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}
