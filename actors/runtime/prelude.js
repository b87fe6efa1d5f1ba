// cellfleet prelude: the JavaScript environment of one cell (spec §2).
//
// Evaluated once per V8 context, before the context is handed to a cell. It installs
// the helpers on globalThis, removes what the contract forbids, and defines the host
// interface `__cellfleet_host` as a global *lexical* binding: later scripts (the cell's
// start script and the host's input scripts) can name it, but it is not a property of
// globalThis, so the global object holds exactly the contract's names.
//
// Everything the cell does is written as a record into a shared-memory log that the
// Python side reads without JavaScript's cooperation (see actors/runtime/mailbox.py). `post()`
// is a synchronous callback into Python: JavaScript calls it when the log is full and
// for events that cannot wait (yield_control, exit). Records are JSON arrays whose first
// element is their kind, from the table RECORD below; actors/runtime/records.py
// describes each record and holds the same table for Python (a test checks both agree).
const __cellfleet_host = (function (post, mailbox, toolNames) {
  "use strict";

  // ---- the kinds of the records this prelude writes (actors/runtime/records.py) ----
  const RECORD = Object.freeze({
    ITEM: "i",
    YIELD: "y",
    TOOL: "t",
    NOTIFY: "n",
    STORE: "s",
    TIMER_SET: "ts",
    TIMER_CLEAR: "tc",
    DONE: "d",
    EXIT: "x",
    DEFECT: "b",
    SITE: "at",
    FINALIZER: "f",
  });

  // ---- intrinsics captured before user code can touch them -----------------------
  const G = globalThis;
  const ObjectDefineProperty = Object.defineProperty;
  const ObjectFreeze = Object.freeze;
  const ObjectCreate = Object.create;
  const ObjectPrototypeHasOwn = Object.hasOwn;
  const ArrayIsArray = Array.isArray;
  const JSONStringify = JSON.stringify;
  const JSONParse = JSON.parse;
  const MathFloor = Math.floor;
  const MathTrunc = Math.trunc;
  const NumberCtor = Number;
  const NumberIsFinite = Number.isFinite;
  const StringCtor = String;
  const SymbolIterator = Symbol.iterator;
  const PromiseCtor = Promise;
  const PromiseResolve = Promise.resolve.bind(Promise);
  const PromiseWithResolvers = Promise.withResolvers.bind(Promise);
  const TypeErrorCtor = TypeError;
  const MapCtor = Map;
  const WeakMapCtor = WeakMap;
  const ReflectApply = Reflect.apply;
  const ReflectConstruct = Reflect.construct;
  const ReflectGetOwnPropertyDescriptor = Reflect.getOwnPropertyDescriptor;
  const ErrorCtor = Error;
  const ErrorCaptureStackTrace = Error.captureStackTrace;
  const call = Function.prototype.call;
  const uncurry = (fn) => call.bind(fn);
  const charCodeAt = uncurry(String.prototype.charCodeAt);
  const stringTrim = uncurry(String.prototype.trim);
  const stringToLowerCase = uncurry(String.prototype.toLowerCase);
  const stringStartsWith = uncurry(String.prototype.startsWith);
  const stringIndexOf = uncurry(String.prototype.indexOf);
  const stringSlice = uncurry(String.prototype.slice);
  const stringReplace = uncurry(String.prototype.replace);
  const stringToWellFormed = uncurry(String.prototype.toWellFormed);
  const arrayPush = uncurry(Array.prototype.push);
  const arrayShift = uncurry(Array.prototype.shift);
  const mapGet = uncurry(Map.prototype.get);
  const mapSet = uncurry(Map.prototype.set);
  const mapDelete = uncurry(Map.prototype.delete);
  const promiseThen = uncurry(Promise.prototype.then);
  const errorToString = uncurry(Error.prototype.toString);
  const functionToString = uncurry(Function.prototype.toString);
  const weakMapGet = uncurry(WeakMap.prototype.get);
  const weakMapSet = uncurry(WeakMap.prototype.set);
  const weakMapHas = uncurry(WeakMap.prototype.has);
  const AtomicsStore = Atomics.store;
  const OriginalDate = Date;

  const MAIN = "exec_main.mjs";
  const PRELUDE = "cellfleet-prelude.js";
  const HOST = "cellfleet-host.js";

  // ---- the shared-memory log -------------------------------------------------------
  // Header: Int32 [0] = committed length in UTF-16 units (Python resets it to 0 when it
  // has consumed everything). Records: two u16 of length (bit 31 = more chunks follow),
  // then the record's UTF-16 code units.
  // The buffer's last INBOX_BYTES are the host's inbox (see `takeInput`), not the log.
  const SLOTS = 8;
  const SLOT_UNITS = 2048;
  const INBOX_BYTES = SLOTS * (32 + 2 * SLOT_UNITS);
  const inboxStart = mailbox.byteLength - INBOX_BYTES;
  const header = new Int32Array(mailbox, 0, 4);
  const units = new Uint16Array(mailbox, 16, (inboxStart - 16) / 2);
  const CAPACITY = units.length;

  function writeChunk(text, start, count, more) {
    let w = header[0];
    if (w + 2 + count > CAPACITY) {
      post(); // Python drains the log and resets header[0] before returning.
      w = header[0];
    }
    const length = more ? (count | 0x80000000) >>> 0 : count;
    units[w] = length & 0xffff;
    units[w + 1] = length >>> 16;
    w += 2;
    for (let i = 0; i < count; i++) units[w + i] = charCodeAt(text, start + i);
    AtomicsStore(header, 0, w + count);
  }

  // Records are plain data the prelude made; JSON.stringify would still ask a `toJSON`
  // the cell put on a prototype (its own, or one it chained in) to stand in for them: a
  // forged record. So they are written by `plainJSON`, which asks nobody.
  const ArrayPrototype = Array.prototype;
  const ObjectPrototype = Object.prototype;
  const ObjectKeys = Object.keys;
  function plainJSON(value) {
    if (value === null) return "null";
    const type = typeof value;
    if (type === "string") return JSONStringify(value); // a primitive: no toJSON
    if (type === "number") return NumberIsFinite(value) ? JSONStringify(value) : "null";
    if (type === "boolean") return value ? "true" : "false";
    if (type !== "object") return "null";
    let out = "";
    if (ArrayIsArray(value)) {
      const length = value.length;
      for (let i = 0; i < length; i++) {
        const item = ObjectPrototypeHasOwn(value, i) ? value[i] : null;
        out += (i ? "," : "") + (item === undefined ? "null" : plainJSON(item));
      }
      return `[${out}]`;
    }
    const keys = ObjectKeys(value);
    for (let i = 0; i < keys.length; i++) {
      const item = value[keys[i]];
      if (item === undefined || typeof item === "function" || typeof item === "symbol") continue;
      out += (out ? "," : "") + JSONStringify(keys[i]) + ":" + plainJSON(item);
    }
    return `{${out}}`;
  }
  function send(record) {
    if (siteRecording) {
      const site = callSite() ?? NO_SITE;
      write([RECORD.SITE, site[0], site[1]]);
    }
    write(record);
  }
  function write(record) {
    const text = plainJSON(record);
    const chunk = CAPACITY - 2;
    let start = 0;
    while (text.length - start > chunk) {
      writeChunk(text, start, chunk, true);
      start += chunk;
    }
    writeChunk(text, start, text.length - start, false);
  }

  function sendUrgent(record) {
    send(record);
    post();
  }

  // ---- asking Python: a stored value's JSON text (actors/runtime/mailbox.py) --------
  const REQUEST = ObjectFreeze({ NONE: 0, KEY_PART: 1, LOAD: 2, MORE: 3, ANSWER_NONE: -1 });
  const StringFromCharCode = String.fromCharCode;
  // Fixed windows on the mailbox, made now: a typed-array method such as subarray would
  // build its result through `constructor[Symbol.species]`, which the cell can replace,
  // and hand it the mailbox.
  const CHUNK = 8192;
  // (Their sizes are kept apart: `length` is a getter the cell can replace too.)
  const windows = [];
  const windowSizes = [];
  for (let start = 0; start < CAPACITY; start += CHUNK) {
    const size = CAPACITY - start < CHUNK ? CAPACITY - start : CHUNK;
    arrayPush(windows, new Uint16Array(mailbox, 16 + 2 * start, size));
    arrayPush(windowSizes, size);
  }
  function readUnits(count) {
    let text = "";
    for (let k = 0; k * CHUNK < count; k++) {
      const part = ReflectApply(StringFromCharCode, null, windows[k]);
      const n = count - k * CHUNK;
      text += n >= windowSizes[k] ? part : stringSlice(part, 0, n);
    }
    return text;
  }
  // ---- the host's inputs, through the inbox (actors/runtime/mailbox.py) -------------
  // Every input (a tool's result or error, a timer) is given by `take()`, the same script
  // every time: V8 compiles it once per context, and every input reaches the cell through
  // the same frames (how deep its stack can go must not depend on how an input came: a
  // replay gives the inputs back to back). The host leaves input n in slot n % SLOTS, at
  // most SLOTS in flight. A slot's header: Int32 [0] = the input's kind (INPUT; NONE once
  // taken), [1] = 1 if its text was staged (`stage`: too long for the slot), [2] = its
  // text's length in UTF-16 units; Float64 at byte 16 = its clock, at byte 24 = its tool
  // call's sequence number or timer id. The slots' texts follow the headers.
  const INPUT = ObjectFreeze({ NONE: 0, RESOLVE: 1, REJECT: 2, FIRE: 3 });
  const slotHeaders = [];
  const slotNumbers = [];
  const slotTexts = [];
  for (let k = 0; k < SLOTS; k++) {
    arrayPush(slotHeaders, new Int32Array(mailbox, inboxStart + 32 * k, 3));
    arrayPush(slotNumbers, new Float64Array(mailbox, inboxStart + 32 * k + 16, 2));
    arrayPush(slotTexts, new Uint16Array(mailbox,
      inboxStart + 32 * SLOTS + 2 * SLOT_UNITS * k, SLOT_UNITS));
  }
  const staged = new MapCtor(); // slot -> the text of its input, too long for the slot
  let taken = 0;
  function takeInput() {
    const slot = taken % SLOTS;
    taken++;
    const header = slotHeaders[slot];
    const kind = header[0];
    const clock = slotNumbers[slot][0];
    const id = slotNumbers[slot][1];
    let text = "";
    if (header[1]) {
      text = mapGet(staged, slot);
      mapDelete(staged, slot);
      if (typeof text !== "string") { // its staging failed: the host ends the cell
        AtomicsStore(header, 0, INPUT.NONE);
        send([RECORD.DEFECT, "an input's staged text is missing"]);
        return;
      }
    } else {
      const count = header[2] < SLOT_UNITS ? header[2] : SLOT_UNITS;
      const u = slotTexts[slot];
      let i = 0;
      for (; i + 8 <= count; i += 8) {
        text += StringFromCharCode(u[i], u[i + 1], u[i + 2], u[i + 3], u[i + 4], u[i + 5],
          u[i + 6], u[i + 7]);
      }
      for (; i < count; i++) text += StringFromCharCode(u[i]);
    }
    AtomicsStore(header, 0, INPUT.NONE); // the slot may take the host's next input
    if (kind === INPUT.RESOLVE) resolveInput(id, clock, text);
    else if (kind === INPUT.REJECT) rejectInput(id, clock, text);
    else if (kind === INPUT.FIRE) fireInput(id, clock);
  }
  function stageInput(slot, text) {
    mapSet(staged, slot, text);
  }

  function askStored(key) {
    post(); // the log is drained and empty: the question and its answer go there
    let start = 0;
    for (;;) {
      const count = key.length - start < CAPACITY ? key.length - start : CAPACITY;
      for (let i = 0; i < count; i++) units[i] = charCodeAt(key, start + i);
      start += count;
      header[2] = count;
      header[1] = start < key.length ? REQUEST.KEY_PART : REQUEST.LOAD;
      post();
      if (start >= key.length) break;
    }
    if (header[1] === REQUEST.ANSWER_NONE) {
      header[1] = REQUEST.NONE;
      return undefined;
    }
    let json = readUnits(header[2]);
    while (header[3]) {
      header[1] = REQUEST.MORE;
      post();
      json += readUnits(header[2]);
    }
    return json;
  }

  // ---- cell state ------------------------------------------------------------------
  let started = false;
  let finished = false; // the module promise settled (or a timer callback threw)
  let exited = false;
  let clockMs = 0; // recorded clock (ms since epoch, fractional)
  let outputBudget = 0; // bytes of output the cell may still produce
  let timerLimit = 0;
  let nextTimerId = 1;
  let nextToolSeq = 1;
  const timers = new MapCtor(); // id -> callback
  const pendingTools = new MapCtor(); // seq -> {resolve, reject}
  // key -> JSON text, or null if not stored: the values loaded and the cell's own writes
  // (the session's values stay in Python until the cell loads them).
  const storedView = new MapCtor();

  // ---- determinism: clock and random -----------------------------------------------
  // Every read of the clock advances it by one microsecond, so busy-waits on Date.now()
  // terminate, while the value stays a pure function of the recorded inputs.
  function now() {
    clockMs += 0.001;
    return clockMs;
  }

  let s0 = 0, s1 = 0, s2 = 0, s3 = 0; // sfc32 state
  function random() {
    s0 >>>= 0; s1 >>>= 0; s2 >>>= 0; s3 >>>= 0;
    const t = (s0 + s1 | 0) + s3 | 0;
    s3 = s3 + 1 | 0;
    s0 = s1 ^ (s1 >>> 9);
    s1 = s2 + (s2 << 3) | 0;
    s2 = (s2 << 21) | (s2 >>> 11);
    s2 = s2 + t | 0;
    return (t >>> 0) / 4294967296;
  }

  // ---- native-looking functions ------------------------------------------------------
  // The reference's helpers are native functions: anonymous, length 0, and their
  // source reads `function () { [native code] }`.
  const nativeSource = new WeakMapCtor();
  function native(fn, name) {
    if (fn.name !== name) ObjectDefineProperty(fn, "name", { value: name });
    weakMapSet(nativeSource, fn, `function ${name}() { [native code] }`);
    return fn;
  }
  const FunctionPrototype = Function.prototype;
  const patchedToString = native(function toString() {
    if (weakMapHas(nativeSource, this)) return weakMapGet(nativeSource, this);
    const source = functionToString(this);
    // Tool functions are many and made per cell; they are recognised by their text.
    return source === toolSource ? "function () { [native code] }" : source;
  }, "toString");
  ObjectDefineProperty(FunctionPrototype, "toString", {
    value: patchedToString, writable: true, enumerable: false, configurable: true,
  });

  // ---- finalizers --------------------------------------------------------------------
  // V8 runs a finalizer whenever it collects what it watches, with nothing of the host's
  // asking: for a cell in a hub's realm, maybe during a later cell. The first one a cell
  // registers tells the host, which then frees the cell's isolate (hubs.py).
  const FinalizationRegistryPrototype = FinalizationRegistry.prototype;
  const finalizationRegister = FinalizationRegistryPrototype.register;
  let finalizing = false;
  ObjectDefineProperty(FinalizationRegistryPrototype, "register", {
    value: native(function register(target, heldValue) {
      if (!finalizing) {
        finalizing = true;
        send([RECORD.FINALIZER]);
      }
      return ReflectApply(finalizationRegister, this, arguments);
    }, "register"),
    writable: true, enumerable: false, configurable: true,
  });

  // ---- stack traces ------------------------------------------------------------------
  // User code runs in exec_main.mjs from line 2 on (line 1 is the start wrapper). The
  // stack shows only the model's frames with the model's line numbers: prelude and
  // host frames, and builtins called by them, are dropped.
  function isInternal(frame) {
    const file = frame.getScriptNameOrSourceURL();
    if (file === PRELUDE || file === HOST) return true;
    return file === MAIN && frame.getLineNumber() === 1;
  }
  // Eval origins name the calling script by its (empty) resource name, not its
  // sourceURL: `eval at f (<anonymous>:3:1)`; the module reports them as exec_main.mjs.
  function adjust(text) {
    return stringReplace(text, /exec_main\.mjs:(\d+):(\d+)|\(<anonymous>:(\d+):(\d+)\)/g,
      (_, line, column, evalLine, evalColumn) => line === undefined
        ? `(${MAIN}:${NumberCtor(evalLine) - 1}:${evalColumn})`
        : `${MAIN}:${NumberCtor(line) - 1}:${column}`);
  }
  function prepareStackTrace(error, frames) {
    if (rawFrames) return frames; // (replay: callSite reads them)
    let head;
    try { head = errorToString(error); } catch { head = "<error>"; }
    const dropped = [];
    for (let i = frames.length - 1; i >= 0; i--) {
      const frame = frames[i];
      const file = frame.getScriptNameOrSourceURL();
      dropped[i] = isInternal(frame) ||
        ((file === null || file === undefined) && i + 1 < frames.length && dropped[i + 1]);
    }
    let out = head;
    for (let i = 0; i < frames.length; i++) {
      if (!dropped[i]) out += "\n    at " + adjust(frameText(frames[i]));
    }
    return out;
  }
  // A frame as V8 writes it. In a realm the model's code is compiled by `eval`, and V8
  // names its anonymous functions "eval" (CallSiteInfo::GetFunctionName); such a frame
  // is written as V8 writes it for a script's (SerializeJSStackFrame, without a name).
  // (The pool gives a realm only to code that never says "eval": pool.py.)
  function frameText(frame) {
    if (frame.getFunctionName() !== "eval" || !frame.isEval() ||
        frame.getScriptNameOrSourceURL() !== MAIN) return frame.toString();
    const location = `${MAIN}:${frame.getLineNumber()}:${frame.getColumnNumber()}`;
    const prefix = frame.isAsync() ? "async " : "";
    if (frame.isConstructor()) return `${prefix}new <anonymous> (${location})`;
    if (frame.isToplevel()) return prefix + location;
    const type = frame.getTypeName();
    const method = frame.getMethodName();
    const name = (type ? type + "." : "") + (method ? method : "<anonymous>");
    return `${prefix}${name} (${location})`;
  }
  ObjectDefineProperty(Error, "prepareStackTrace", {
    value: prepareStackTrace, writable: true, enumerable: false, configurable: true,
  });

  // ---- replay only: where each record was made -------------------------------------
  // (config.sites). Live cells never run this; a replayed cell must not be able to tell
  // the difference: nothing of the cell's is called and no property is written here.
  let siteRecording = false;
  let rawFrames = false; // our own prepareStackTrace hands back the frames themselves
  const NO_SITE = ObjectFreeze([0, 0]); // line 0: no frame of the model's code
  // [line, column] of the innermost frame of the model's code, or null: taken only
  // while the stack hook is still ours (the cell's own hook would run otherwise), within
  // the cell's own `Error.stackTraceLimit`.
  function callSite() {
    const hook = ReflectGetOwnPropertyDescriptor(ErrorCtor, "prepareStackTrace");
    if (hook === undefined || !ObjectPrototypeHasOwn(hook, "value") ||
        hook.value !== prepareStackTrace) return null;
    let site = null;
    rawFrames = true;
    try {
      const holder = ObjectCreate(null);
      ErrorCaptureStackTrace(holder, callSite);
      const frames = holder.stack;
      for (let i = 0; ArrayIsArray(frames) && i < frames.length; i++) {
        const frame = frames[i];
        if (frame.getScriptNameOrSourceURL() === MAIN && frame.getLineNumber() > 1) {
          site = [frame.getLineNumber() - 1, frame.getColumnNumber()];
          break;
        }
      }
    } catch {
      site = null; // (a stack overflow, say: the record goes on without its site)
    } finally {
      rawFrames = false;
    }
    return site;
  }
  // Text of an uncaught value (spec §2.1): a string `stack` if it has one, else ToString.
  function uncaughtText(value) {
    if ((typeof value === "object" && value !== null) || typeof value === "function") {
      try {
        const stack = value.stack;
        if (typeof stack === "string") return stack;
      } catch { /* fall through to ToString */ }
    }
    try { return `${value}`; } catch { return ""; }
  }

  // Text of an exception raised by JSON.stringify inside a helper: its stack.
  function errorText(error) {
    return uncaughtText(error);
  }

  // ---- value -> text (spec §2.4) -----------------------------------------------------
  function toText(value) {
    const type = typeof value;
    if (value === undefined || value === null || type === "boolean" || type === "number" ||
        type === "bigint" || type === "string") {
      return `${value}`;
    }
    let json;
    try {
      json = JSONStringify(value);
    } catch (error) {
      throw errorText(error);
    }
    return json === undefined ? "undefined" : json;
  }

  // ---- output ------------------------------------------------------------------------
  const OUTPUT_LIMIT_TEXT = "exec cell output limit exceeded";
  function charge(bytes) {
    outputBudget -= bytes + 64;
    if (outputBudget < 0) throw OUTPUT_LIMIT_TEXT;
  }
  function emit(item, bytes) {
    if (finished && exited) return;
    charge(bytes);
    send([RECORD.ITEM, item]);
  }
  function emitText(text) {
    text = stringToWellFormed(text);
    emit({ type: "input_text", text }, text.length);
  }

  const text = native(function (...args) {
    emitText(toText(args[0]));
  }, "");

  // ---- images and audio (spec §2.5) --------------------------------------------------
  const IMAGE_EXPECTS = "image expects a non-empty image URL string, an object with image_url and optional detail, or a raw MCP image block";
  const IMAGE_DETAIL_TYPE = "image detail must be a string when provided";
  const IMAGE_DETAIL_VALUE = "image detail must be one of: auto, low, high, original";
  const IMAGE_INVALID = "Tool call failed: invalid image output. Pass a base64 data URI instead";
  const IMAGE_REMOTE = "Tool call failed: remote image URLs are not supported in tool outputs. Pass a base64 data URI instead";
  const AUDIO_EXPECTS = "audio expects a non-empty audio URL string, an object with audio_url, or a raw MCP audio block";
  const AUDIO_INVALID = "Tool call failed: invalid audio output. Pass a base64 data URI instead";
  const isDetail = (value) => typeof value === "string" &&
    (value === "auto" || value === "low" || value === "high" || value === "original");

  function isObject(value) {
    return (typeof value === "object" && value !== null) || typeof value === "function";
  }

  // A raw MCP block after a JSON round trip: {type, data, mimeType | mime_type, _meta}.
  function mcpBlock(value, expects) {
    let json;
    try { json = JSONStringify(value); } catch (error) { throw errorText(error); }
    if (json === undefined) {
      throw "failed to serialize JavaScript value: expected value at line 1 column 1";
    }
    const block = JSONParse(json);
    if (!isObject(block) || ArrayIsArray(block) || typeof block.type !== "string") {
      throw expects;
    }
    return block;
  }
  function blockDataUrl(block) {
    const data = block.data;
    if (stringStartsWith(stringToLowerCase(data), "data:")) return data;
    let mime = block.mimeType;
    if (typeof mime !== "string") mime = block.mime_type;
    if (typeof mime !== "string") mime = "application/octet-stream";
    return `data:${mime};base64,${data}`;
  }
  function metaDetail(block) {
    const meta = block._meta;
    if (!isObject(meta)) return undefined;
    const detail = meta["codex/imageDetail"];
    return isDetail(detail) ? detail : undefined;
  }

  function imageItem(value, override, hasOverride) {
    if (hasOverride && override !== null && override !== undefined &&
        typeof override !== "string") {
      throw IMAGE_DETAIL_TYPE;
    }
    let url;
    let detail;
    if (typeof value === "string") {
      url = value;
    } else if (isObject(value) && !ArrayIsArray(value) && value.image_url !== undefined) {
      url = value.image_url;
      if (typeof url !== "string") throw IMAGE_EXPECTS;
      detail = value.detail;
      if (detail !== null && detail !== undefined && typeof detail !== "string") {
        throw IMAGE_DETAIL_TYPE;
      }
    } else if (isObject(value) && !ArrayIsArray(value)) {
      const block = mcpBlock(value, IMAGE_EXPECTS);
      if (block.type !== "image") {
        throw `image only accepts MCP image blocks, got ${JSONStringify(block.type)}`;
      }
      if (typeof block.data !== "string" || block.data === "") {
        throw "image expected MCP image data";
      }
      url = blockDataUrl(block);
      detail = metaDetail(block);
    } else {
      throw IMAGE_EXPECTS;
    }
    if (url === "") throw IMAGE_EXPECTS;
    const colon = stringIndexOf(url, ":");
    if (colon < 0) throw IMAGE_INVALID;
    const scheme = stringToLowerCase(stringSlice(url, 0, colon));
    if (scheme === "http" || scheme === "https") throw IMAGE_REMOTE;
    if (scheme !== "data") throw IMAGE_INVALID;
    if (typeof override === "string") detail = override;
    if (detail === null || detail === undefined) {
      detail = "high";
    } else {
      detail = stringToLowerCase(detail);
      if (!isDetail(detail)) throw IMAGE_DETAIL_VALUE;
    }
    return { type: "input_image", image_url: url, detail };
  }

  const image = native(function (...args) {
    const item = imageItem(args[0], args[1], args.length >= 2);
    emit(item, item.image_url.length);
  }, "");

  function audioItem(value) {
    let url;
    if (typeof value === "string") {
      url = value;
    } else if (isObject(value) && !ArrayIsArray(value) && value.audio_url !== undefined) {
      url = value.audio_url;
      if (typeof url !== "string") throw AUDIO_EXPECTS;
    } else if (isObject(value) && !ArrayIsArray(value)) {
      const block = mcpBlock(value, AUDIO_EXPECTS);
      if (block.type !== "audio") {
        throw `audio only accepts MCP audio blocks, got ${JSONStringify(block.type)}`;
      }
      if (typeof block.data !== "string" || block.data === "") {
        throw "audio expected MCP audio data";
      }
      url = blockDataUrl(block);
    } else {
      throw AUDIO_EXPECTS;
    }
    if (url === "") throw AUDIO_EXPECTS;
    if (!stringStartsWith(stringToLowerCase(url), "data:")) throw AUDIO_INVALID;
    return { type: "input_audio", audio_url: url };
  }

  const audio = native(function (...args) {
    const item = audioItem(args[0]);
    emit(item, item.audio_url.length);
  }, "");

  const generatedImage = native(function (...args) {
    const result = args[0];
    if (!isObject(result)) {
      throw "generatedImage expects an image generation result object";
    }
    const hint = result.output_hint;
    if (hint !== undefined && typeof hint !== "string") {
      throw "generatedImage output_hint must be a string when provided";
    }
    const item = imageItem(result, undefined, false);
    emit(item, item.image_url.length);
    if (hint !== undefined) emitText(hint);
  }, "");

  // ---- content (spec §2.11) ----------------------------------------------------------
  const CONTENT_EXPECTS = "content expects one MCP ContentBlock";
  function contentItem(value) {
    if (typeof value === "string" || !isObject(value) || value instanceof PromiseCtor) {
      throw CONTENT_EXPECTS;
    }
    let json;
    try { json = JSONStringify(value); } catch (error) { throw errorText(error); }
    if (json === undefined) throw CONTENT_EXPECTS;
    const block = JSONParse(json);
    if (!isObject(block) || ArrayIsArray(block)) throw CONTENT_EXPECTS;
    const isString = (v) => typeof v === "string";
    const optionalMime = (b) => (b.mimeType === undefined || b.mimeType === null ||
      isString(b.mimeType)) && (b.mime_type === undefined || b.mime_type === null ||
      isString(b.mime_type));
    switch (block.type) {
      case "text": {
        if (!isString(block.text)) throw CONTENT_EXPECTS;
        const meta = block._meta;
        if (isObject(meta) && meta["codex/encryptedContent"] === true) {
          throw "content cannot emit encrypted MCP text";
        }
        return { type: "input_text", text: block.text };
      }
      case "image": {
        if (!isString(block.data) || !optionalMime(block)) throw CONTENT_EXPECTS;
        return { type: "input_image", image_url: blockDataUrl(block),
          detail: metaDetail(block) ?? "high" };
      }
      case "audio": {
        if (!isString(block.data) || !optionalMime(block)) throw CONTENT_EXPECTS;
        return { type: "input_audio", audio_url: blockDataUrl(block) };
      }
      case "resource": {
        const resource = block.resource;
        if (!isObject(resource) || ArrayIsArray(resource) || !isString(resource.uri)) {
          throw CONTENT_EXPECTS;
        }
        const hasText = resource.text !== undefined;
        const hasBlob = resource.blob !== undefined;
        if ((!hasText && !hasBlob) || (hasText && !isString(resource.text)) ||
            (hasBlob && !isString(resource.blob))) {
          throw CONTENT_EXPECTS;
        }
        return { type: "input_text", text: json };
      }
      case "resource_link": {
        if (!isString(block.uri) || !isString(block.name)) throw CONTENT_EXPECTS;
        return { type: "input_text", text: json };
      }
      default:
        throw CONTENT_EXPECTS;
    }
  }
  function emitContent(value) {
    const item = contentItem(value);
    if (item.type === "input_text") emitText(item.text);
    else emit(item, (item.image_url ?? item.audio_url).length);
  }
  // content, as_settled and stream_settled are ordinary JavaScript functions in the
  // reference (named, with their parameters), unlike the native helpers.
  const content = function content(value) {
    if (typeof value !== "string" && isObject(value)) {
      const iteratorMethod = value[SymbolIterator];
      if (typeof iteratorMethod === "function") {
        const iterator = ReflectApply(iteratorMethod, value, []);
        const next = iterator.next;
        for (;;) {
          const step = ReflectApply(next, iterator, []);
          if (step.done) return;
          try {
            emitContent(step.value);
          } catch (error) {
            const close = iterator.return;
            if (typeof close === "function") {
              try { ReflectApply(close, iterator, []); } catch { /* keep the first error */ }
            }
            throw error;
          }
        }
      }
    }
    emitContent(value);
  };

  // ---- notify and yield (spec §2.10) -------------------------------------------------
  const notify = native(function (...args) {
    const message = toText(args[0]);
    if (stringTrim(message) === "") throw "notify expects non-empty text";
    const wellFormed = stringToWellFormed(message);
    charge(wellFormed.length);
    send([RECORD.NOTIFY, wellFormed]);
  }, "");

  const yieldControl = native(function () {
    sendUrgent([RECORD.YIELD]);
  }, "");

  // exit() must not be catchable and nothing may run after it: report it, then spin
  // until the host tears the isolate down.
  const exit = native(function () {
    exited = true;
    sendUrgent([RECORD.EXIT]);
    for (;;) { /* the host terminates execution */ }
  }, "");

  // ---- store / load (spec §2.6) ------------------------------------------------------
  const RESERVED_KEY = '"$serde_json::private::RawValue":';
  function serialize(value) {
    let json;
    try { json = JSONStringify(value); } catch (error) { throw errorText(error); }
    if (json === undefined) {
      throw "failed to serialize JavaScript value: expected value at line 1 column 1";
    }
    if (stringIndexOf(json, RESERVED_KEY) >= 0) {
      throw "failed to serialize JavaScript value: reserved JSON object key";
    }
    return stringToWellFormed(json);
  }
  function helperKey(key, helper) {
    try { return `${key}`; } catch { throw `${helper} key must be a string`; }
  }
  const store = native(function (...args) {
    const key = helperKey(args[0], "store");
    const value = args[1];
    if (value === undefined) {
      throw `Unable to store ${JSONStringify(key)}. Only plain serializable objects can be stored.`;
    }
    const json = serialize(value);
    mapSet(storedView, key, json);
    send([RECORD.STORE, key, json]);
  }, "");
  const load = native(function (...args) {
    const key = helperKey(args[0], "load");
    let json = mapGet(storedView, key);
    if (json === undefined) {
      json = askStored(key);
      mapSet(storedView, key, json === undefined ? null : json);
    }
    return json === undefined || json === null ? undefined : JSONParse(json);
  }, "");

  // ---- timers (spec §2.8) ------------------------------------------------------------
  const setTimeoutHelper = native(function (...args) {
    const callback = args[0];
    if (typeof callback !== "function") throw "setTimeout expects a function callback";
    if (timers.size >= timerLimit) throw "exec cell has too many pending timeouts";
    // As in the reference, the timer is registered before its delay is converted: a
    // delay that cannot become a number throws, and the timer still fires at once.
    const id = nextTimerId++;
    mapSet(timers, id, callback);
    let delay = 0;
    try {
      delay = +args[1];
    } finally {
      delay = NumberIsFinite(delay) && delay > 0 ? MathTrunc(delay) : 0;
      send([RECORD.TIMER_SET, id, delay, clockMs]);
    }
    return id;
  }, "");
  const clearTimeoutHelper = native(function (...args) {
    const raw = args[0];
    if (raw === undefined || raw === null) return undefined;
    let id;
    try { id = +raw; } catch { throw "clearTimeout expects a numeric timeout id"; }
    if (!NumberIsFinite(id) || id <= 0) return undefined;
    id = MathTrunc(id);
    if (mapDelete(timers, id)) send([RECORD.TIMER_CLEAR, id]);
    return undefined;
  }, "");

  // ---- nested tools (spec §3.2) ------------------------------------------------------
  function callTool(name, arg) {
    const input = arg === undefined ? "null" : serialize(arg); // JSON text: records stay flat
    const seq = nextToolSeq++;
    const { promise, resolve, reject } = PromiseWithResolvers();
    mapSet(pendingTools, seq, { resolve, reject });
    send([RECORD.TOOL, seq, name, input]);
    return promise;
  }
  function makeTool(name) {
    return function (...args) { return callTool(name, args[0]); };
  }
  const toolSource = functionToString(makeTool(""));

  // ---- as_settled / stream_settled (spec §2.11) --------------------------------------
  function isIterable(value) {
    return value !== null && value !== undefined &&
      typeof value[SymbolIterator] === "function";
  }
  function asSettled(promises) {
    if (!isIterable(promises)) throw new TypeErrorCtor("promises is not iterable");
    const entries = [];
    if (promises instanceof MapCtor) {
      for (const [key, value] of promises) arrayPush(entries, [key, value]);
    } else {
      let index = 0;
      for (const value of promises) arrayPush(entries, [index++, value]);
    }
    const queue = [];
    let waiting = null;
    let closed = false;
    let remaining = entries.length;
    for (const [index, value] of entries) {
      let promise;
      try { promise = PromiseResolve(value); } catch (reason) { promise = PromiseCtor.reject(reason); }
      promiseThen(promise,
        (v) => settle({ index, status: "fulfilled", value: v }),
        (r) => settle({ index, status: "rejected", reason: r }));
    }
    function settle(record) {
      remaining--;
      if (closed) return;
      if (waiting !== null) {
        const resolve = waiting;
        waiting = null;
        resolve(record);
      } else {
        arrayPush(queue, record);
      }
    }
    const generator = async function* () {
      try {
        while (!closed) {
          if (queue.length > 0) {
            yield arrayShift(queue);
          } else if (remaining === 0) {
            return;
          } else {
            const { promise, resolve } = PromiseWithResolvers();
            waiting = resolve;
            yield await promise;
          }
        }
      } finally {
        closed = true;
      }
    };
    return generator();
  }
  const as_settled = function as_settled(promises) {
    return asSettled(promises);
  };
  const stream_settled = async function stream_settled(promises, emit) {
    if (typeof emit !== "function") {
      throw new TypeErrorCtor("stream_settled requires a callback");
    }
    for await (const record of asSettled(promises)) {
      await ReflectApply(emit, undefined, [record]);
    }
  };

  // ---- the global object (spec §2.2) -------------------------------------------------
  // (ShadowRealm: what makes a cell's realm, realms.py; never the cell's)
  for (const name of ["console", "Atomics", "SharedArrayBuffer", "WebAssembly", "Temporal",
    "setTimeout", "clearTimeout", "__timer_manager", "ShadowRealm"]) {
    delete G[name];
  }

  // Date reads the recorded clock; everything else about Date stays native.
  const DateReplacement = function Date(...args) {
    if (new.target === undefined) return new OriginalDate(now()).toString();
    return args.length === 0
      ? ReflectConstruct(OriginalDate, [now()], new.target)
      : ReflectConstruct(OriginalDate, args, new.target);
  };
  ObjectDefineProperty(DateReplacement, "length", { value: 7 });
  ObjectDefineProperty(DateReplacement, "prototype", { value: OriginalDate.prototype });
  ObjectDefineProperty(OriginalDate.prototype, "constructor", {
    value: DateReplacement, writable: true, enumerable: false, configurable: true,
  });
  for (const key of ["parse", "UTC"]) {
    ObjectDefineProperty(DateReplacement, key, {
      value: OriginalDate[key], writable: true, enumerable: false, configurable: true,
    });
  }
  ObjectDefineProperty(DateReplacement, "now", {
    value: native(() => MathFloor(now()), "now"),
    writable: true, enumerable: false, configurable: true,
  });
  weakMapSet(nativeSource, DateReplacement, "function Date() { [native code] }");
  ObjectDefineProperty(G, "Date", {
    value: DateReplacement, writable: true, enumerable: false, configurable: true,
  });
  ObjectDefineProperty(Math, "random", {
    value: native(() => random(), "random"),
    writable: true, enumerable: false, configurable: true,
  });

  function define(name, value) {
    ObjectDefineProperty(G, name, { value, writable: true, enumerable: true, configurable: true });
  }

  // ---- the host interface ------------------------------------------------------------
  function configure(configJson, install) {
    const config = JSONParse(configJson);
    clockMs = config.clock;
    [s0, s1, s2, s3] = config.seed;
    for (let i = 0; i < 12; i++) random();
    outputBudget = config.outputLimit;
    timerLimit = config.timerLimit;
    if (config.tools !== null) installTools(config.tools, install);
    siteRecording = config.sites === true;
  }

  // `names` alternates JS global names and descriptions.
  function installTools(names, install) {
    const tools = {};
    const allTools = [];
    for (let i = 0; i < names.length; i += 2) {
      const name = names[i];
      tools[name] = makeTool(name);
      arrayPush(allTools, { name, description: names[i + 1] });
    }
    if (install) {
      G.tools = tools;
      G.ALL_TOOLS = allTools;
    }
  }

  // Run the start and output paths once while the context waits in an idle pool, so
  // V8 has compiled them before a cell's clock starts (under load the pool has no idle
  // time and the cell compiles them as it runs). Leaves no state behind (the host
  // empties the log afterwards).
  function warmPaths() {
    configure(JSONStringify({ clock: 0, seed: [1, 2, 3, 4], outputLimit: 1e9,
      timerLimit: 0, tools: ["warm", ""] }), false);
    mapSet(storedView, "k", "1");
    load("k");
    text("warm");
    text({ warm: [1] });
    serialize({ warm: 1 });
    mapDelete(storedView, "k");
    outputBudget = 0;
  }

  function finish(errorText) {
    if (finished) return;
    finished = true;
    send([RECORD.DONE, errorText]);
  }
  function guard(fn) {
    try {
      fn();
    } catch (error) {
      send([RECORD.DEFECT, uncaughtText(error)]);
    }
  }

  // Installed ahead of any cell (the context pool runs this prelude), in the reference's
  // property order; a cell's start only fills in `tools` and `ALL_TOOLS`.
  define("tools", {});
  define("ALL_TOOLS", []);
  define("clearTimeout", clearTimeoutHelper);
  define("setTimeout", setTimeoutHelper);
  define("text", text);
  define("content", content);
  define("image", image);
  define("audio", audio);
  define("generatedImage", generatedImage);
  define("store", store);
  define("load", load);
  define("notify", notify);
  define("yield_control", yieldControl);
  define("exit", exit);
  define("as_settled", as_settled);
  define("stream_settled", stream_settled);

  function resolveInput(seq, clock, json) {
    clockMs = clockMs > clock ? clockMs : clock;
    const pending = mapGet(pendingTools, seq);
    if (pending === undefined) return;
    mapDelete(pendingTools, seq);
    guard(() => pending.resolve(JSONParse(json)));
  }
  function rejectInput(seq, clock, message) {
    clockMs = clockMs > clock ? clockMs : clock;
    const pending = mapGet(pendingTools, seq);
    if (pending === undefined) return;
    mapDelete(pendingTools, seq);
    guard(() => pending.reject(message));
  }
  function fireInput(id, clock) {
    clockMs = clockMs > clock ? clockMs : clock;
    const callback = mapGet(timers, id);
    if (callback === undefined) return;
    mapDelete(timers, id);
    try {
      ReflectApply(callback, undefined, []);
    } catch (error) {
      finish(uncaughtText(error));
    }
  }

  if (toolNames !== null) installTools(JSONParse(toolNames), true);
  post(); // the host learns this isolate, to watch its memory outside the heap (v8.py)
  return ObjectFreeze({
    // Start script, line 1 of exec_main.mjs: configure the cell and return the runner
    // that the wrapped user function is handed to.
    // Pool time: install the tool set the next cell is expected to use.
    tools(namesJson) {
      if (started) throw new TypeErrorCtor("cell already started");
      installTools(JSONParse(namesJson), true);
    },
    // Pool time, when the pool is idle.
    warm() {
      if (started) throw new TypeErrorCtor("cell already started");
      warmPaths();
    },
    start(configJson) {
      if (started) throw new TypeErrorCtor("cell already started");
      started = true;
      configure(configJson, true);
      return (main) => {
        promiseThen(ReflectApply(main, undefined, []),
          () => finish(null),
          (error) => finish(uncaughtText(error)));
      };
    },
    // Host inputs: the next one in the inbox, and the text of one too long for its slot.
    take: takeInput,
    stage: stageInput,
  });
})(__cellfleet_post, __cellfleet_mailbox, __cellfleet_tools);
delete globalThis.__cellfleet_post;
delete globalThis.__cellfleet_tools;
{
  const mailbox = globalThis.__cellfleet_mailbox;
  delete globalThis.__cellfleet_mailbox;
  mailbox; // the script's value: the host maps the log through it (pool.py)
}
//# sourceURL=cellfleet-prelude.js
