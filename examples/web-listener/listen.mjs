// Watch deployments live from a client app, without the API in the path: exchange the Runpod key for a Firebase
// custom token (POST /v1/client-token), sign in to Firebase Authentication with it, listen to Firestore.
//
//   node listen.mjs --intake-url URL --api-key KEY --deployment-id ID [--until ready] [--timeout-s 300]
//   node listen.mjs --intake-url URL --api-key KEY --all          # every deployment of the tenant
//
// Prints one JSON line per change ({"deployment_id", "status", "event_seq", "updated_at", "error"}) and exits 0 when
// the deployment reaches --until (default: a terminal status, failed or deleted), 1 on an error, 2 on the timeout.
// Locally, FIREBASE_AUTH_EMULATOR_HOST and FIRESTORE_EMULATOR_HOST (printed by `make up`) point the SDK at the
// emulators; in production set FIREBASE_API_KEY (and FIREBASE_AUTH_DOMAIN) of your Firebase web app instead.
import { initializeApp } from "firebase/app";
import { connectAuthEmulator, getAuth, signInWithCustomToken } from "firebase/auth";
import { collection, connectFirestoreEmulator, doc, getFirestore, onSnapshot, query, where } from "firebase/firestore";

const TERMINAL = new Set(["failed", "deleted"]);

function options(argv) {
  const out = { until: null, timeoutS: 300, all: false };
  for (let i = 2; i < argv.length; i++) {
    const name = argv[i];
    if (name === "--all") out.all = true;
    else if (name === "--intake-url") out.intakeUrl = argv[++i];
    else if (name === "--api-key") out.apiKey = argv[++i];
    else if (name === "--deployment-id") out.deploymentId = argv[++i];
    else if (name === "--until") out.until = argv[++i];
    else if (name === "--timeout-s") out.timeoutS = Number(argv[++i]);
    else throw new Error(`unknown option ${name}`);
  }
  if (!out.intakeUrl || !out.apiKey || (!out.deploymentId && !out.all)) {
    throw new Error("usage: listen.mjs --intake-url URL --api-key KEY (--deployment-id ID | --all)");
  }
  return out;
}

function line(snap) {
  const data = snap.data() ?? {};
  const iso = (value) => (value && typeof value.toDate === "function" ? value.toDate().toISOString() : value ?? null);
  return JSON.stringify({
    deployment_id: snap.id,
    status: data.status ?? null,
    event_seq: data.event_seq ?? null,
    updated_at: iso(data.updated_at),
    error: data.error ?? null,
  });
}

async function main() {
  const opts = options(process.argv);
  const answer = await fetch(`${opts.intakeUrl.replace(/\/$/, "")}/v1/client-token`, {
    method: "POST",
    headers: { Authorization: `Bearer ${opts.apiKey}` },
  });
  if (!answer.ok) throw new Error(`client-token: HTTP ${answer.status} ${await answer.text()}`);
  const { custom_token: customToken, project_id: projectId, tenant } = await answer.json();

  const app = initializeApp({
    projectId,
    apiKey: process.env.FIREBASE_API_KEY ?? "local-emulator-key",
    authDomain: process.env.FIREBASE_AUTH_DOMAIN ?? `${projectId}.firebaseapp.com`,
  });
  const auth = getAuth(app);
  if (process.env.FIREBASE_AUTH_EMULATOR_HOST) {
    connectAuthEmulator(auth, `http://${process.env.FIREBASE_AUTH_EMULATOR_HOST}`, { disableWarnings: true });
  }
  const db = getFirestore(app);
  if (process.env.FIRESTORE_EMULATOR_HOST) {
    const [host, port] = process.env.FIRESTORE_EMULATOR_HOST.split(":");
    connectFirestoreEmulator(db, host, Number(port));
  }
  await signInWithCustomToken(auth, customToken);

  const done = (code) => {
    clearTimeout(timer);
    unsubscribe();
    // Let stdout drain before the SDK's sockets are torn down.
    process.stdout.write("", () => process.exit(code));
  };
  const timer = setTimeout(() => {
    process.stderr.write(`no ${opts.until ?? "terminal status"} within ${opts.timeoutS} s\n`);
    done(2);
  }, opts.timeoutS * 1000);
  const failed = (error) => {
    process.stderr.write(`listener error: ${error.code ?? ""} ${error.message}\n`);
    done(1);
  };

  let unsubscribe;
  if (opts.all) {
    // The rules allow reading deployments whose owner is the token's tenant: the query must say so.
    const mine = query(collection(db, "deployments"), where("owner", "==", tenant));
    unsubscribe = onSnapshot(mine, (snaps) => snaps.docChanges().forEach((c) => console.log(line(c.doc))), failed);
    return;
  }
  unsubscribe = onSnapshot(
    doc(db, "deployments", opts.deploymentId),
    (snap) => {
      if (!snap.exists()) return;
      console.log(line(snap));
      const status = snap.data().status;
      if (status === opts.until || TERMINAL.has(status)) done(status === opts.until || !opts.until ? 0 : 1);
    },
    failed,
  );
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exit(1);
});
