/**
 * Throwaway TLS material for tests, made with the `openssl` command: a CA, a server certificate
 * for `localhost` and `127.0.0.1`, and a client certificate with a chosen common name. Keys are
 * EC P-256 (quick to make); certificates are valid for two days from now, or the server's for the
 * dates given (in the past, to test an expired certificate; `openssl ca` signs that one).
 *
 * It writes PEM files into a directory the caller owns and removes nothing.
 *
 * @since 0.1.0
 */
import { Data, Effect } from "effect"
import * as Fs from "node:fs/promises"
import * as Path from "node:path"
import * as Process from "./internal/process.ts"

/**
 * @since 0.1.0
 * @category errors
 */
export class CertificatesError extends Data.TaggedError("CertificatesError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * PEM texts and their paths.
 *
 * @since 0.1.0
 * @category models
 */
export interface Certificates {
  readonly ca: string
  readonly caPath: string
  /** The client certificate. */
  readonly cert: string
  readonly certPath: string
  /** The client key. */
  readonly key: string
  readonly keyPath: string
  readonly serverCertPath: string
  readonly serverKeyPath: string
  readonly clientCommonName: string
}

/**
 * The validity of a certificate, from `notBefore` to `notAfter` (whole seconds, UTC).
 *
 * @since 0.1.0
 * @category models
 */
export interface Validity {
  readonly notBefore: Date
  readonly notAfter: Date
}

/** GeneralizedTime as `openssl ca -startdate` takes it: YYYYMMDDHHMMSSZ. */
const opensslTime = (date: Date): string => date.toISOString().replace(/[-:T]/g, "").replace(/\.\d{3}Z$/, "Z")

/** A minimal `openssl ca` configuration: a database of the certificates it signed, any subject. */
const caConfig = [
  "[ca]",
  "default_ca = test_ca",
  "[test_ca]",
  "database = ca-index.txt",
  "new_certs_dir = .",
  "serial = ca-serial",
  "policy = any_subject",
  "default_md = sha256",
  "unique_subject = no",
  "[any_subject]",
  "commonName = supplied",
  ""
].join("\n")

const leafExtensions = (usage: string, san: string) =>
  `${san}basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=${usage}\n`

const keyArgs = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

/**
 * @since 0.1.0
 * @category constructors
 */
export const generate = Effect.fn("Certificates.generate")(function*(
  dir: string,
  options: { readonly clientCommonName?: string; readonly serverValidity?: Validity } = {}
) {
  const clientCommonName = options.clientCommonName ?? "effect-amqp-client"
  const at = (name: string) => Path.join(dir, name)
  const openssl = (args: ReadonlyArray<string>) =>
    Process.run("openssl", args, { cwd: dir }).pipe(
      Effect.mapError((cause) => new CertificatesError({ message: `openssl could not run: ${cause.message}`, cause })),
      Effect.flatMap((result) =>
        result.exitCode === 0 ? Effect.void : Effect.fail(
          new CertificatesError({ message: `openssl ${args[0]} failed (${result.exitCode}): ${result.stderr}` })
        )
      )
    )
  const write = (name: string, text: string) =>
    Effect.tryPromise({
      try: () => Fs.writeFile(at(name), text),
      catch: (cause) => new CertificatesError({ message: `cannot write ${name}`, cause })
    })
  /** Signs `name`.csr for exactly `validity`; `openssl x509` can only start a certificate now. */
  const signFor = (name: string, validity: Validity) =>
    Effect.gen(function*() {
      yield* write("ca.cnf", caConfig)
      yield* write("ca-index.txt", "")
      yield* openssl([
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-cert",
        "ca.pem",
        "-keyfile",
        "ca.key",
        "-in",
        `${name}.csr`,
        "-out",
        `${name}.pem`,
        "-startdate",
        opensslTime(validity.notBefore),
        "-enddate",
        opensslTime(validity.notAfter),
        "-extfile",
        `${name}.ext`,
        "-notext",
        "-rand_serial"
      ])
    })
  const leaf = (name: string, commonName: string, extensions: string, validity: Validity | undefined) =>
    Effect.gen(function*() {
      yield* write(`${name}.ext`, extensions)
      yield* openssl(["req", ...keyArgs, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${commonName}`])
      if (validity !== undefined) return yield* signFor(name, validity)
      yield* openssl([
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        String(Date.now() + (name === "server" ? 1 : 2)),
        "-days",
        "2",
        "-out",
        `${name}.pem`,
        "-extfile",
        `${name}.ext`
      ])
    })

  yield* Effect.tryPromise({
    try: () => Fs.mkdir(dir, { recursive: true }),
    catch: (cause) => new CertificatesError({ message: `cannot create ${dir}`, cause })
  })
  yield* openssl([
    "req",
    "-x509",
    ...keyArgs,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=effect-amqp test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign"
  ])
  yield* Effect.all([
    leaf(
      "server",
      "localhost",
      leafExtensions("serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"),
      options.serverValidity
    ),
    leaf("client", clientCommonName, leafExtensions("clientAuth", ""), undefined)
  ], { concurrency: 2 })
  const read = (name: string) =>
    Effect.tryPromise({
      try: () => Fs.readFile(at(name), "utf8"),
      catch: (cause) => new CertificatesError({ message: `cannot read ${name}`, cause })
    })
  return {
    ca: yield* read("ca.pem"),
    caPath: at("ca.pem"),
    cert: yield* read("client.pem"),
    certPath: at("client.pem"),
    key: yield* read("client.key"),
    keyPath: at("client.key"),
    serverCertPath: at("server.pem"),
    serverKeyPath: at("server.key"),
    clientCommonName
  } satisfies Certificates
})
