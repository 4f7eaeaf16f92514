/**
 * A YAML file kept together with its syntax tree, so that any problem found later — by the schema,
 * by a semantic rule — can be reported at the line and column where the user wrote the value.
 */
import { readFileSync } from 'node:fs';
import { relative, isAbsolute } from 'node:path';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import type { ConfigIssue } from '../errors.js';
import { ConfigUnreadableError } from '../errors.js';

export type FieldPath = ReadonlyArray<string | number>;

/** `['listeners', 0, 'rate_limits', 'action']` → `listeners[0].rate_limits.action`. */
export function formatFieldPath(path: FieldPath): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? part : `.${part}`;
  }
  return out;
}

/** How a path is shown in messages: relative to the working directory when that is shorter. */
export function displayPath(absolutePath: string): string {
  const rel = relative(process.cwd(), absolutePath);
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : absolutePath;
}

/**
 * How deeply a document may nest. The yaml parser recurses once per level and overflows the stack
 * near 800; worse, V8 may compile a regular expression while the stack is nearly exhausted and then
 * abort the whole process ("RegExpCompiler Allocation failed"), which a config fuzzer hit with a
 * 20,000-deep `[[[…]]]`: a reload would have killed the daemon. A configuration needs a handful of
 * levels; anything far beyond is rejected before parsing.
 */
const MAX_FLOW_DEPTH = 64;
const MAX_INDENT = 128;
const MAX_COMPACT_MARKERS = 32;

/**
 * Where `text` nests too deeply for a configuration, or undefined. A quick scan, not a parser:
 * brackets inside quotes and comments are skipped, so a quoted "[[[[" does not count.
 */
export function excessiveNesting(text: string): { line: number; col: number; what: string } | undefined {
  let depth = 0;
  let line = 1;
  let lineStart = 0;
  let atLineStart = true;
  let quote = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '\n') {
      line++;
      lineStart = i + 1;
      atLineStart = true;
      if (quote === "'") continue; // single-quoted scalars may span lines
      continue;
    }
    if (atLineStart) {
      // Indentation, then compact nested sequences or keys ("- - - x", "? ? x") on one line.
      let j = i;
      while (j < text.length && (text[j] === ' ' || text[j] === '\t')) j++;
      if (j - lineStart > MAX_INDENT && quote === '') return { line, col: MAX_INDENT + 1, what: `indented more than ${MAX_INDENT} columns` };
      let markers = 0;
      while (j + 1 < text.length && (text[j] === '-' || text[j] === '?' || text[j] === ':') && (text[j + 1] === ' ' || text[j + 1] === '\t')) {
        markers++;
        j += 2;
        while (j < text.length && text[j] === ' ') j++;
      }
      if (markers > MAX_COMPACT_MARKERS) return { line, col: 1, what: `more than ${MAX_COMPACT_MARKERS} nested "- " or "? " on one line` };
      atLineStart = false;
    }
    if (quote !== '') {
      if (c === quote && (quote === "'" || text[i - 1] !== '\\')) quote = '';
      continue;
    }
    if (c === '"' || c === "'") quote = c;
    else if (c === '#' && (i === lineStart || /\s/.test(text[i - 1]!))) {
      const end = text.indexOf('\n', i);
      i = (end === -1 ? text.length : end) - 1;
    } else if (c === '[' || c === '{') {
      if (++depth > MAX_FLOW_DEPTH) return { line, col: i - lineStart + 1, what: `brackets nested more than ${MAX_FLOW_DEPTH} deep` };
    } else if ((c === ']' || c === '}') && depth > 0) depth--;
  }
  return undefined;
}

export class YamlSource {
  /** The path shown in messages. */
  readonly file: string;
  readonly absolutePath: string;
  /** The document as plain data; undefined when the text is not valid YAML. */
  readonly data: unknown;
  /** Syntax errors, as issues. */
  readonly issues: readonly ConfigIssue[];
  readonly #doc: Document | undefined;
  readonly #lines: LineCounter;

  private constructor(absolutePath: string, text: string) {
    this.absolutePath = absolutePath;
    this.file = displayPath(absolutePath);
    this.#lines = new LineCounter();
    const nesting = excessiveNesting(text);
    if (nesting !== undefined) {
      this.issues = [{ file: this.file, line: nesting.line, col: nesting.col, field: '', message: `invalid YAML: nested too deeply (${nesting.what}); a configuration needs only a few levels`, severity: 'error' }];
      this.#doc = undefined;
      this.data = undefined;
      return;
    }
    // logLevel 'error': yaml's warnings (a key that is a collection…) would go to stderr as process
    // warnings; such a key is reported as unknown anyway.
    const doc = parseDocument(text, { lineCounter: this.#lines, uniqueKeys: true, prettyErrors: true, logLevel: 'error' });
    const issues: ConfigIssue[] = [];
    for (const error of doc.errors) {
      const pos = error.linePos?.[0] ?? this.#lines.linePos(error.pos[0]);
      // The first line of yaml's message is the useful part; the rest is a source excerpt.
      const message = error.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
      issues.push({ file: this.file, line: pos.line, col: pos.col, field: '', message: `invalid YAML: ${message}`, severity: 'error' });
    }
    this.issues = issues;
    if (issues.length === 0) {
      this.#doc = doc;
      try {
        // maxAliasCount guards against "billion laughs" documents.
        this.data = doc.toJS({ maxAliasCount: 100 });
      } catch (error) {
        this.data = undefined;
        this.issues = [{ file: this.file, line: 1, col: 1, field: '', message: `invalid YAML: ${(error as Error).message}`, severity: 'error' }];
      }
    } else {
      this.#doc = undefined;
      this.data = undefined;
    }
  }

  static fromText(absolutePath: string, text: string): YamlSource {
    return new YamlSource(absolutePath, text);
  }

  static read(absolutePath: string): YamlSource {
    let text: string;
    try {
      text = readFileSync(absolutePath, 'utf8');
    } catch (error) {
      const err = error as NodeJS.ErrnoException;
      const reason =
        err.code === 'ENOENT' ? 'no such file' :
        err.code === 'EACCES' ? 'permission denied' :
        err.code === 'EISDIR' ? 'is a folder, not a file' : err.message;
      throw new ConfigUnreadableError(displayPath(absolutePath), `cannot read configuration: ${reason}`, { cause: error });
    }
    return new YamlSource(absolutePath, text);
  }

  /**
   * The line and column of the value at `path`, or of its key when `key` is set. When the path does
   * not exist in the file, the deepest part of it that does.
   */
  locate(path: FieldPath, key = false): { line: number; col: number } {
    let node: Node | null | undefined = this.#doc?.contents;
    let offset = node?.range?.[0] ?? 0;
    for (let i = 0; i < path.length && node; i++) {
      const part = path[i]!;
      const last = i === path.length - 1;
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === part);
        if (!pair) break;
        const keyNode = pair.key as Node;
        const valueNode = pair.value as Node | null;
        if (last && (key || !valueNode?.range)) {
          offset = keyNode.range?.[0] ?? offset;
          break;
        }
        node = valueNode;
      } else if (isSeq(node) && typeof part === 'number') {
        node = node.items[part] as Node | undefined;
      } else {
        break;
      }
      if (node?.range) offset = node.range[0];
    }
    return this.#lines.linePos(offset);
  }

  /** Whether `path` exists in the document. */
  has(path: FieldPath): boolean {
    return this.#doc?.hasIn(path) ?? false;
  }

  issue(path: FieldPath, message: string, options: { key?: boolean; field?: string; severity?: 'error' | 'warning' } = {}): ConfigIssue {
    const { line, col } = this.locate(path, options.key ?? false);
    return {
      file: this.file,
      line,
      col,
      field: options.field ?? formatFieldPath(path),
      message,
      severity: options.severity ?? 'error',
    };
  }
}
