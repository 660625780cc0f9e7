/**
 * Private RabbitMQ nodes for tests, started from the installed `rabbitmq-server` (Debian's
 * 3.10 package) with their own name, ports on 127.0.0.1, Erlang cookie, data and log directory,
 * and a TLS listener whose certificates are made at start. Closing the scope stops the node
 * (SIGKILL if it does not stop) and removes its directory.
 *
 * The node runs the real start script from RabbitMQ's library folder, not Debian's wrapper in
 * /usr/sbin (that one switches user and drops the environment). The script's folder is reached
 * through a small mirror of RabbitMQ's home whose plugins folder holds only the applications the
 * broker needs: the boot scans every module on the code path, and a short path halves start time.
 *
 * `rabbitmqctl` wrappers (close connections, memory alarm, list connections, channels, queues,
 * users, eval) work on any node described by an `Info`, including the shared node of a test run.
 * Nothing here listens or connects anywhere but 127.0.0.1; the machine's epmd is used, not stopped.
 *
 * @since 0.1.0
 */
import { Context, Data, Effect, Layer, Semaphore } from "effect"
import type * as Scope from "effect/Scope"
import * as ChildProcess from "node:child_process"
import * as NodeFs from "node:fs"
import * as Fs from "node:fs/promises"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Certificates from "./Certificates.ts"
import * as Process from "./internal/process.ts"
import { definitionsJson, pluginClosure } from "./internal/rabbitmqHome.ts"

/**
 * @since 0.1.0
 * @category errors
 */
export class BrokerNodeError extends Data.TaggedError("BrokerNodeError")<{
  readonly reason: "NotInstalled" | "Setup" | "Start" | "Stop" | "Command"
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Server-proposed heartbeat in seconds (rabbitmq.conf `heartbeat`). */
  readonly heartbeat?: number
  readonly frameMax?: number
  readonly channelMax?: number
  /** Delivery acknowledgement timeout in milliseconds, node-wide in 3.10. */
  readonly consumerTimeout?: number
  /** Let `guest` log in from any address (`loopback_users = none`). Default true. */
  readonly guestFromAnywhere?: boolean
  /**
   * TLS listener options: `verify_peer` (default true), `fail_if_no_peer_cert` (default false), and
   * the validity of the server certificate (default two days from the start; past dates make an
   * expired one, which the node serves all the same).
   */
  readonly tls?: {
    readonly verifyPeer?: boolean
    readonly failIfNoPeerCert?: boolean
    readonly serverValidity?: Certificates.Validity
  }
  /**
   * Offer SASL EXTERNAL (plugin `rabbitmq_auth_mechanism_ssl`, login from the client
   * certificate's common name). The user named like the client CN exists either way.
   */
  readonly saslExternal?: boolean
  /** Common name of the generated client certificate. Default "effect-amqp-client". */
  readonly clientCommonName?: string
  /** More lines for rabbitmq.conf. Keep any listener they add on 127.0.0.1. */
  readonly extraConfig?: ReadonlyArray<string>
  /** Where Debian's package puts RabbitMQ. Default /usr/lib/rabbitmq. */
  readonly rabbitmqPrefix?: string
  /** How long a start may take. Default 60 s. */
  readonly startTimeoutMillis?: number
}

/**
 * What identifies a running node; plain data, so it can cross processes (see `SharedBroker`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Info {
  readonly nodeName: string
  readonly host: "127.0.0.1"
  readonly amqpPort: number
  readonly amqpsPort: number
  readonly distPort: number
  /** amqp://guest:guest@127.0.0.1:amqpPort */
  readonly url: string
  /** amqps://guest:guest@localhost:amqpsPort (the server certificate names localhost and 127.0.0.1) */
  readonly tlsUrl: string
  /** The node's temporary directory. */
  readonly dir: string
  /** HOME of the node, where its Erlang cookie is. */
  readonly home: string
  /** Folder of the rabbitmq-server and rabbitmqctl scripts used. */
  readonly scriptsDir: string
  readonly tls: {
    readonly caPath: string
    readonly certPath: string
    readonly keyPath: string
    readonly clientCommonName: string
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ConnectionInfo {
  readonly pid: string
  /** The broker's name, e.g. "127.0.0.1:50000 -> 127.0.0.1:5672". */
  readonly name: string
  /** `connection_name` from the client properties, if the client sent one. */
  readonly clientProvidedName: string | undefined
  readonly user: string
  readonly peerPort: number
  readonly state: string
  readonly channels: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ChannelInfo {
  readonly pid: string
  readonly connection: string
  readonly number: number
  readonly name: string
  readonly consumerCount: number
  readonly messagesUnacknowledged: number
  readonly prefetchCount: number
  readonly confirm: boolean
}

/**
 * @since 0.1.0
 * @category models
 */
export interface QueueInfo {
  readonly name: string
  readonly messages: number
  readonly consumers: number
  readonly durable: boolean
  readonly autoDelete: boolean
  readonly exclusive: boolean
}

/**
 * `rabbitmqctl` wrappers for one node.
 *
 * @since 0.1.0
 * @category models
 */
export interface Control {
  /** Run `rabbitmqctl -n <node> <args>`; fails on a non-zero exit. Returns stdout. */
  readonly rabbitmqctl: (args: ReadonlyArray<string>) => Effect.Effect<string, BrokerNodeError>
  /** Evaluate an Erlang expression on the node (`rabbitmqctl eval`), e.g. "rabbit_alarm:get_alarms()." */
  readonly eval: (expression: string) => Effect.Effect<string, BrokerNodeError>
  /**
   * Close the connections whose broker name or client-provided name equals `which`, or all of
   * them. Returns how many were closed.
   */
  readonly closeConnection: (which: string | "all", reason?: string) => Effect.Effect<number, BrokerNodeError>
  /** `set_vm_memory_high_watermark 0.0000001`: publishers get connection.blocked. */
  readonly setMemoryAlarm: Effect.Effect<void, BrokerNodeError>
  /** Back to 0.4. */
  readonly clearMemoryAlarm: Effect.Effect<void, BrokerNodeError>
  /** Resource alarms in force, as printed by `rabbit_alarm:get_alarms()`. */
  readonly alarms: Effect.Effect<string, BrokerNodeError>
  readonly deleteQueue: (name: string) => Effect.Effect<void, BrokerNodeError>
  readonly listConnections: Effect.Effect<ReadonlyArray<ConnectionInfo>, BrokerNodeError>
  readonly listChannels: Effect.Effect<ReadonlyArray<ChannelInfo>, BrokerNodeError>
  readonly listQueues: (vhost?: string) => Effect.Effect<ReadonlyArray<QueueInfo>, BrokerNodeError>
  readonly addUser: (name: string, password: string) => Effect.Effect<void, BrokerNodeError>
  readonly setPermissions: (
    user: string,
    permissions?: {
      readonly vhost?: string
      readonly configure?: string
      readonly write?: string
      readonly read?: string
    }
  ) => Effect.Effect<void, BrokerNodeError>
}

/**
 * A node started by this process.
 *
 * @since 0.1.0
 * @category models
 */
export interface BrokerNode extends Info, Control {
  readonly info: Info
  /** The PEM texts of the CA and of the client certificate and key, with their paths. */
  readonly tlsFiles: { readonly ca: string; readonly cert: string; readonly key: string }
  /** Stop the node cleanly (SIGTERM, then SIGKILL after 30 s); data stays. */
  readonly stop: Effect.Effect<void, BrokerNodeError>
  /** Start it again after `stop` or `kill9`: same name, ports and data. */
  readonly start: Effect.Effect<void, BrokerNodeError>
  readonly restart: Effect.Effect<void, BrokerNodeError>
  /** SIGKILL the Erlang VM (pid from RABBITMQ_PID_FILE) and wait until it is gone. */
  readonly kill9: Effect.Effect<void, BrokerNodeError>
  readonly isRunning: Effect.Effect<boolean>
  /** OS pid of the running VM, read from the pid file. */
  readonly osPid: Effect.Effect<number | undefined>
  /** Milliseconds the last start took, from spawn until both listeners accepted. */
  readonly lastStartMillis: Effect.Effect<number>
}

/**
 * @since 0.1.0
 * @category services
 */
export const BrokerNode: Context.Service<BrokerNode, BrokerNode> = Context.Service<BrokerNode>(
  "@effect-amqp/testing/BrokerNode"
)

/**
 * The message of the `NotInstalled` error.
 *
 * @since 0.1.0
 * @category errors
 */
export const installHint =
  "rabbitmq-server is not installed: run `apt-get update && apt-get install -y rabbitmq-server`"

const guestPassword = "guest"

const failWith = (reason: BrokerNodeError["reason"], message: string) => (cause: unknown) =>
  new BrokerNodeError({
    reason,
    message: `${message}: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause
  })

const fs = <A>(message: string, f: () => Promise<A>) => Effect.tryPromise({ try: f, catch: failWith("Setup", message) })

/**
 * The real `rabbitmq-server` script's folder (RabbitMQ's `sbin`), found by following Debian's
 * symlinks or by globbing its library folder (under `prefix`); the newest version wins.
 *
 * @since 0.1.0
 * @category installation
 */
export const findScriptsDir = (
  prefix = "/usr/lib/rabbitmq"
): Effect.Effect<string, BrokerNodeError> =>
  Effect.suspend(() => {
    const candidates: Array<string> = []
    try {
      candidates.push(Path.dirname(NodeFs.realpathSync(Path.join(prefix, "bin", "rabbitmq-server"))))
    } catch {
      // not there: try the library folder
    }
    try {
      const lib = Path.join(prefix, "lib")
      const versions = NodeFs.readdirSync(lib).filter((name) => name.startsWith("rabbitmq_server-"))
      versions.sort((a, b) => b.localeCompare(a, "en", { numeric: true }))
      for (const name of versions) candidates.push(Path.join(lib, name, "sbin"))
    } catch {
      // no library folder
    }
    const found = candidates.find((dir) =>
      NodeFs.existsSync(Path.join(dir, "rabbitmq-server")) && NodeFs.existsSync(Path.join(dir, "rabbitmq-env"))
    )
    return found === undefined
      ? Effect.fail(new BrokerNodeError({ reason: "NotInstalled", message: installHint }))
      : Effect.succeed(found)
  })

const freePort: Effect.Effect<number, BrokerNodeError> = Effect.callback((resume) => {
  const server = Net.createServer()
  server.once("error", (cause) => resume(Effect.fail(failWith("Setup", "cannot find a free port")(cause))))
  server.listen({ host: "127.0.0.1", port: 0, exclusive: true }, () => {
    const port = (server.address() as Net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

const canConnect = (port: number): Effect.Effect<boolean> =>
  Effect.callback((resume) => {
    const socket = Net.connect({ host: "127.0.0.1", port })
    const done = (ok: boolean) => {
      socket.destroy()
      resume(Effect.succeed(ok))
    }
    socket.once("connect", () => done(true))
    socket.once("error", () => done(false))
    return Effect.sync(() => socket.destroy())
  })

/** Environment for rabbitmq-server and rabbitmqctl: the caller's, minus RabbitMQ and Erlang settings. */
const baseEnv = (info: Info): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("RABBITMQ_") && !key.startsWith("ERL_")) env[key] = value
  }
  return {
    ...env,
    HOME: info.home,
    LC_ALL: "C.UTF-8",
    LANG: "C.UTF-8",
    RABBITMQ_SCRIPTS_DIR: info.scriptsDir,
    RABBITMQ_CONF_ENV_FILE: Path.join(info.dir, "rabbitmq-env.conf"),
    ERL_EPMD_ADDRESS: "127.0.0.1",
    ERL_FLAGS: "-kernel inet_dist_use_interface {127,0,0,1}",
    RABBITMQ_CTL_DIST_PORT_MIN: "35672",
    RABBITMQ_CTL_DIST_PORT_MAX: "35772"
  }
}

const parseJson = <A>(text: string): Array<A> => {
  const trimmed = text.trim()
  if (trimmed === "") return []
  return JSON.parse(trimmed) as Array<A>
}

type Row = Record<string, unknown>

const str = (row: Row, key: string): string => {
  const value = row[key]
  return typeof value === "string" ? value : value === undefined || value === null ? "" : JSON.stringify(value)
}

const num = (row: Row, key: string): number => {
  const value = row[key]
  return typeof value === "number" ? value : Number(value ?? 0)
}

/** client_properties come as [[key, type, value], ...] or as an object, depending on the version. */
const clientProvidedName = (row: Row): string | undefined => {
  const props = row["client_properties"]
  if (Array.isArray(props)) {
    for (const entry of props) {
      if (Array.isArray(entry) && entry[0] === "connection_name") return String(entry[2])
    }
    return undefined
  }
  if (props !== null && typeof props === "object") {
    const value = (props as Row)["connection_name"]
    return value === undefined ? undefined : String(value)
  }
  return undefined
}

/** An Erlang binary / string literal of `text`, as byte values (nothing to escape). */
const erlangBinary = (text: string) => `<<${[...Buffer.from(text, "utf8")].join(",")}>>`

/** Closes the connections whose name or client-provided name is `which`; evaluates to how many. */
const closeMatching = (which: string, reason: string) =>
  `W = ${erlangBinary(which)}, R = binary_to_list(${erlangBinary(reason)}),
  Match = fun(P) ->
    case catch rabbit_reader:info(P, [name, client_properties]) of
      I when is_list(I) ->
        C = proplists:get_value(client_properties, I, []),
        Provided = case lists:keyfind(<<"connection_name">>, 1, C) of {_, _, V} -> V; _ -> undefined end,
        proplists:get_value(name, I) =:= W orelse Provided =:= W;
      _ -> false
    end
  end,
  Ps = [P || P <- rabbit_networking:connections(), Match(P)],
  [rabbit_networking:close_connection(P, R) || P <- Ps],
  length(Ps).`

/**
 * `rabbitmqctl` wrappers for the node `info` describes. They run the node's own copy of the
 * script with its cookie; each call costs a few hundred milliseconds (an Erlang VM starts).
 *
 * @since 0.1.0
 * @category constructors
 */
export const control = (info: Info): Control => {
  const env = baseEnv(info)
  const rabbitmqctl = (args: ReadonlyArray<string>) =>
    Process.run(Path.join(info.scriptsDir, "rabbitmqctl"), ["-n", info.nodeName, ...args], {
      env,
      cwd: info.dir,
      timeoutMillis: 60_000
    }).pipe(
      Effect.mapError(failWith("Command", `rabbitmqctl ${args[0] ?? ""}`)),
      Effect.flatMap((result) =>
        result.exitCode === 0 ? Effect.succeed(result.stdout) : Effect.fail(
          new BrokerNodeError({
            reason: "Command",
            message: `rabbitmqctl ${args.join(" ")} exited with ${result.exitCode}: ${result.stderr}${result.stdout}`
          })
        )
      ),
      Effect.withSpan("BrokerNode.rabbitmqctl", { attributes: { command: args[0] ?? "" } })
    )
  const list = (args: ReadonlyArray<string>) =>
    rabbitmqctl(["-q", ...args, "--formatter", "json"]).pipe(
      Effect.flatMap((out) =>
        Effect.try({ try: () => parseJson<Row>(out), catch: failWith("Command", `cannot parse ${args[0]} output`) })
      )
    )
  const listConnections = list([
    "list_connections",
    "pid",
    "name",
    "user",
    "peer_port",
    "state",
    "channels",
    "client_properties"
  ])
    .pipe(Effect.map((rows) =>
      rows.map((row): ConnectionInfo => ({
        pid: str(row, "pid"),
        name: str(row, "name"),
        clientProvidedName: clientProvidedName(row),
        user: str(row, "user"),
        peerPort: num(row, "peer_port"),
        state: str(row, "state"),
        channels: num(row, "channels")
      }))
    ))
  const setWatermark = (value: string) => Effect.asVoid(rabbitmqctl(["set_vm_memory_high_watermark", value]))
  return {
    rabbitmqctl,
    eval: (expression) => rabbitmqctl(["eval", expression]),
    closeConnection: (which, reason = "closed by test") =>
      Effect.gen(function*() {
        if (which === "all") {
          const count = (yield* listConnections).length
          yield* rabbitmqctl(["close_all_connections", reason])
          return count
        }
        // The JSON listing prints pids in a form close_connection does not take: match and close on the node.
        const out = yield* rabbitmqctl(["eval", closeMatching(which, reason)])
        return Number(out.trim())
      }),
    setMemoryAlarm: setWatermark("0.0000001"),
    clearMemoryAlarm: setWatermark("0.4"),
    alarms: rabbitmqctl(["eval", "rabbit_alarm:get_alarms()."]).pipe(Effect.map((out) => out.trim())),
    deleteQueue: (name) => Effect.asVoid(rabbitmqctl(["delete_queue", name])),
    listConnections,
    listChannels: list([
      "list_channels",
      "pid",
      "connection",
      "number",
      "name",
      "consumer_count",
      "messages_unacknowledged",
      "prefetch_count",
      "confirm"
    ])
      .pipe(Effect.map((rows) =>
        rows.map((row): ChannelInfo => ({
          pid: str(row, "pid"),
          connection: str(row, "connection"),
          number: num(row, "number"),
          name: str(row, "name"),
          consumerCount: num(row, "consumer_count"),
          messagesUnacknowledged: num(row, "messages_unacknowledged"),
          prefetchCount: num(row, "prefetch_count"),
          confirm: row["confirm"] === true
        }))
      )),
    listQueues: (vhost = "/") =>
      list(["list_queues", "-p", vhost, "name", "messages", "consumers", "durable", "auto_delete", "exclusive"]).pipe(
        Effect.map((rows) =>
          rows.map((row): QueueInfo => ({
            name: str(row, "name"),
            messages: num(row, "messages"),
            consumers: num(row, "consumers"),
            durable: row["durable"] === true,
            autoDelete: row["auto_delete"] === true,
            exclusive: row["exclusive"] === true
          }))
        )
      ),
    addUser: (name, password) => Effect.asVoid(rabbitmqctl(["add_user", name, password])),
    setPermissions: (user, permissions = {}) =>
      Effect.asVoid(rabbitmqctl([
        "set_permissions",
        "-p",
        permissions.vhost ?? "/",
        user,
        permissions.configure ?? ".*",
        permissions.write ?? ".*",
        permissions.read ?? ".*"
      ]))
  }
}

/** Nodes of this process still running: killed (and their folders removed) if the process exits first. */
const running = new Map<number, string>()
let exitHookInstalled = false
let nodeCounter = 0

const installExitHook = () => {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once("exit", () => {
    for (const [pid, dir] of running) {
      try {
        process.kill(-pid, "SIGKILL")
      } catch {
        // already gone
      }
      NodeFs.rmSync(dir, { recursive: true, force: true })
    }
  })
}

const rabbitmqConf = (options: Options, info: Info, certs: Certificates.Certificates, definitions: string) => {
  const lines = [
    `listeners.tcp.default = 127.0.0.1:${info.amqpPort}`,
    `listeners.ssl.default = 127.0.0.1:${info.amqpsPort}`,
    `ssl_options.cacertfile = ${certs.caPath}`,
    `ssl_options.certfile = ${certs.serverCertPath}`,
    `ssl_options.keyfile = ${certs.serverKeyPath}`,
    `ssl_options.verify = ${(options.tls?.verifyPeer ?? true) ? "verify_peer" : "verify_none"}`,
    `ssl_options.fail_if_no_peer_cert = ${options.tls?.failIfNoPeerCert ?? false}`,
    `load_definitions = ${definitions}`,
    "log.console = false",
    "log.file.level = info"
  ]
  if (options.guestFromAnywhere ?? true) lines.push("loopback_users = none")
  if (options.heartbeat !== undefined) lines.push(`heartbeat = ${options.heartbeat}`)
  if (options.frameMax !== undefined) lines.push(`frame_max = ${options.frameMax}`)
  if (options.channelMax !== undefined) lines.push(`channel_max = ${options.channelMax}`)
  if (options.consumerTimeout !== undefined) lines.push(`consumer_timeout = ${options.consumerTimeout}`)
  if (options.saslExternal === true) {
    lines.push(
      "auth_mechanisms.1 = PLAIN",
      "auth_mechanisms.2 = AMQPLAIN",
      "auth_mechanisms.3 = EXTERNAL",
      "ssl_cert_login_from = common_name"
    )
  }
  return [...lines, ...(options.extraConfig ?? [])].join("\n") + "\n"
}

/** Lay out the node's folder: config, definitions, certificates and the trimmed RabbitMQ home. */
const prepare = Effect.fn("BrokerNode.prepare")(function*(options: Options, realScripts: string) {
  const dir = yield* fs("cannot create a temporary folder", () => Fs.mkdtemp(Path.join(Os.tmpdir(), "effamqp-node-")))
  const home = Path.join(dir, "home")
  const rmqHome = Path.join(dir, "rabbitmq")
  for (const sub of [home, Path.join(dir, "mnesia"), Path.join(dir, "log"), Path.join(rmqHome, "plugins")]) {
    yield* fs(`cannot create ${sub}`, () => Fs.mkdir(sub, { recursive: true }))
  }
  const realHome = Path.dirname(realScripts)
  yield* fs("cannot mirror RabbitMQ's home", async () => {
    await Fs.symlink(realScripts, Path.join(rmqHome, "sbin"))
    await Fs.symlink(Path.join(realHome, "escript"), Path.join(rmqHome, "escript"))
    const roots = ["rabbit", ...(options.saslExternal === true ? ["rabbitmq_auth_mechanism_ssl"] : [])]
    const realPlugins = Path.join(realHome, "plugins")
    for (const entry of pluginClosure(realPlugins, roots).values()) {
      await Fs.symlink(Path.join(realPlugins, entry), Path.join(rmqHome, "plugins", entry))
    }
  })
  const certs = yield* Certificates.generate(Path.join(dir, "tls"), {
    ...(options.clientCommonName !== undefined ? { clientCommonName: options.clientCommonName } : {}),
    ...(options.tls?.serverValidity !== undefined ? { serverValidity: options.tls.serverValidity } : {})
  }).pipe(Effect.mapError(failWith("Setup", "cannot make certificates")))
  const [amqpPort, amqpsPort, distPort] = [yield* freePort, yield* freePort, yield* freePort]
  const nodeName = `effamqp-${process.pid}-${++nodeCounter}@localhost`
  const info: Info = {
    nodeName,
    host: "127.0.0.1",
    amqpPort,
    amqpsPort,
    distPort,
    url: `amqp://guest:${guestPassword}@127.0.0.1:${amqpPort}`,
    tlsUrl: `amqps://guest:${guestPassword}@localhost:${amqpsPort}`,
    dir,
    home,
    scriptsDir: Path.join(rmqHome, "sbin"),
    tls: {
      caPath: certs.caPath,
      certPath: certs.certPath,
      keyPath: certs.keyPath,
      clientCommonName: certs.clientCommonName
    }
  }
  const definitions = Path.join(dir, "definitions.json")
  yield* fs("cannot write the configuration", async () => {
    await Fs.writeFile(definitions, definitionsJson(certs.clientCommonName, guestPassword))
    await Fs.writeFile(Path.join(dir, "rabbitmq.conf"), rabbitmqConf(options, info, certs, definitions))
    await Fs.writeFile(Path.join(dir, "advanced.config"), "[].\n")
    await Fs.writeFile(
      Path.join(dir, "enabled_plugins"),
      options.saslExternal === true ? "[rabbitmq_auth_mechanism_ssl].\n" : "[].\n"
    )
    await Fs.writeFile(Path.join(dir, "rabbitmq-env.conf"), "")
  })
  return { info, certs }
})

const serverEnv = (info: Info): NodeJS.ProcessEnv => ({
  ...baseEnv(info),
  RABBITMQ_NODENAME: info.nodeName,
  RABBITMQ_NODE_IP_ADDRESS: "127.0.0.1",
  RABBITMQ_NODE_PORT: String(info.amqpPort),
  RABBITMQ_DIST_PORT: String(info.distPort),
  RABBITMQ_CONFIG_FILE: Path.join(info.dir, "rabbitmq.conf"),
  RABBITMQ_ADVANCED_CONFIG_FILE: Path.join(info.dir, "advanced.config"),
  RABBITMQ_ENABLED_PLUGINS_FILE: Path.join(info.dir, "enabled_plugins"),
  RABBITMQ_PLUGINS_DIR: Path.join(Path.dirname(info.scriptsDir), "plugins"),
  RABBITMQ_MNESIA_BASE: Path.join(info.dir, "mnesia"),
  RABBITMQ_LOG_BASE: Path.join(info.dir, "log"),
  RABBITMQ_PID_FILE: Path.join(info.dir, "rabbitmq.pid"),
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: "-kernel inet_dist_use_interface {127,0,0,1}"
})

const tail = (file: string): string => {
  try {
    return NodeFs.readFileSync(file, "utf8").split("\n").slice(-30).join("\n")
  } catch {
    return "(no output)"
  }
}

/**
 * Start a private node in the current scope. Closing the scope stops it and removes its folder.
 *
 * @since 0.1.0
 * @category constructors
 */
export const start: (options?: Options) => Effect.Effect<BrokerNode, BrokerNodeError, Scope.Scope> = Effect.fn(
  "BrokerNode.start"
)(function*(options: Options = {}) {
  const realScripts = yield* findScriptsDir(options.rabbitmqPrefix)
  const { certs, info } = yield* Effect.acquireRelease(
    prepare(options, realScripts),
    (prepared) => Effect.promise(() => Fs.rm(prepared.info.dir, { recursive: true, force: true }))
  )
  const env = serverEnv(info)
  const startupLog = Path.join(info.dir, "log", "startup.log")
  const pidFile = Path.join(info.dir, "rabbitmq.pid")
  const lock = yield* Semaphore.make(1)
  let child: { process: ChildProcess.ChildProcess; exited: Promise<number | null>; gone: boolean } | undefined
  let lastStartMillis = 0
  installExitHook()

  const readPid = Effect.sync(() => {
    try {
      const pid = Number(NodeFs.readFileSync(pidFile, "utf8").trim())
      return Number.isInteger(pid) && pid > 0 ? pid : undefined
    } catch {
      return undefined
    }
  })

  const spawn = Effect.sync(() => {
    const out = NodeFs.openSync(startupLog, "a")
    const proc = ChildProcess.spawn(Path.join(info.scriptsDir, "rabbitmq-server"), [], {
      env,
      cwd: info.dir,
      detached: true,
      stdio: ["ignore", out, out]
    })
    NodeFs.closeSync(out)
    const current = {
      process: proc,
      gone: false,
      exited: new Promise<number | null>((resolve) => {
        proc.once("error", () => resolve(null))
        proc.once("exit", (code) => resolve(code))
      })
    }
    void current.exited.then(() => {
      current.gone = true
      if (proc.pid !== undefined) running.delete(proc.pid)
    })
    if (proc.pid !== undefined) running.set(proc.pid, info.dir)
    child = current
    return current
  })

  const awaitExit = (millis: number) =>
    Effect.suspend(() => {
      const current = child
      if (current === undefined || current.gone) return Effect.succeed(true)
      return Effect.promise(() => current.exited).pipe(
        Effect.as(true),
        Effect.timeoutOrElse({ duration: millis, orElse: () => Effect.succeed(false) })
      )
    })

  const signal = (sig: NodeJS.Signals, group: boolean) =>
    Effect.sync(() => {
      const pid = child?.process.pid
      if (pid === undefined || child?.gone === true) return
      try {
        process.kill(group ? -pid : pid, sig)
      } catch {
        // already gone
      }
    })

  const startNow = Effect.gen(function*() {
    if (child !== undefined && !child.gone) return
    const began = Date.now()
    const current = yield* spawn
    const deadline = began + (options.startTimeoutMillis ?? 60_000)
    while (true) {
      if (current.gone) {
        return yield* new BrokerNodeError({
          reason: "Start",
          message: `rabbitmq-server exited during start; its output:\n${tail(startupLog)}`
        })
      }
      if ((yield* canConnect(info.amqpPort)) && (yield* canConnect(info.amqpsPort))) break
      if (Date.now() > deadline) {
        yield* signal("SIGKILL", true)
        return yield* new BrokerNodeError({
          reason: "Start",
          message: `node ${info.nodeName} not ready after ${Date.now() - began} ms; output:\n${tail(startupLog)}`
        })
      }
      yield* Effect.sleep("25 millis")
    }
    lastStartMillis = Date.now() - began
  })

  const stopNow = Effect.gen(function*() {
    if (child === undefined || child.gone) return
    yield* signal("SIGTERM", false)
    if (yield* awaitExit(30_000)) return yield* signal("SIGKILL", true)
    yield* signal("SIGKILL", true)
    if (!(yield* awaitExit(10_000))) {
      return yield* new BrokerNodeError({ reason: "Stop", message: `node ${info.nodeName} did not exit` })
    }
  })

  const kill9Now = Effect.gen(function*() {
    if (child === undefined || child.gone) return
    const pid = yield* readPid
    yield* Effect.sync(() => {
      try {
        process.kill(pid ?? child!.process.pid!, "SIGKILL")
      } catch {
        // already gone
      }
    })
    if (!(yield* awaitExit(10_000))) {
      return yield* new BrokerNodeError({ reason: "Stop", message: `node ${info.nodeName} survived SIGKILL` })
    }
    yield* signal("SIGKILL", true)
  })

  yield* Effect.acquireRelease(
    lock.withPermit(startNow).pipe(
      Effect.tapError(() => signal("SIGKILL", true)),
      Effect.withSpan("BrokerNode.spawn")
    ),
    () => stopNow.pipe(Effect.catch(() => signal("SIGKILL", true)))
  )

  return BrokerNode.of({
    ...info,
    ...control(info),
    info,
    tlsFiles: { ca: certs.ca, cert: certs.cert, key: certs.key },
    stop: lock.withPermit(stopNow),
    start: lock.withPermit(startNow),
    restart: lock.withPermit(Effect.andThen(stopNow, startNow)),
    kill9: lock.withPermit(kill9Now),
    isRunning: Effect.sync(() => child !== undefined && !child.gone),
    osPid: Effect.suspend(() => (child === undefined || child.gone ? Effect.succeed(undefined) : readPid)),
    lastStartMillis: Effect.sync(() => lastStartMillis)
  })
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<BrokerNode, BrokerNodeError> =>
  Layer.effect(BrokerNode, start(options))
