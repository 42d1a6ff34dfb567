//! A Dockerfile reader for `kiln init --from-dockerfile`. It follows
//! BuildKit's frontend where the result is visible in the image config:
//! parser directives, line continuations with the escape character,
//! heredocs (skipped), ARG scoping, `$VAR`/`${VAR:-x}` substitution in the
//! instructions Docker substitutes, exec vs shell form, and the per-stage
//! config inheritance of `FROM <stage>`. It runs nothing and fetches no
//! base image, so what a base image contributes (its env, user, cmd) is
//! unknown here and left to kiln's `[image] base`.
//!
//! Every error is `PATH:LINE: what is wrong; what to do`.

use std::path::Path;

use crate::{Error, Result};

/// Dockerfiles larger than this are refused: real ones are a few KiB.
pub const MAX_BYTES: usize = 1 << 20;

/// Docker's default shell for the shell form on Linux.
const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// Every instruction Docker knows; anything else is an error, as in Docker.
const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// One instruction, continuation lines joined, comments dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line of the keyword.
    pub line: usize,
    /// Upper-cased keyword.
    pub keyword: String,
    /// Everything after the keyword, trimmed.
    pub args: String,
    /// Heredoc bodies that followed the instruction (`RUN <<EOF`).
    pub heredocs: Vec<Heredoc>,
}

/// A heredoc body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub body: String,
}

/// The instruction stream of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexed {
    /// The escape character (`\` unless `# escape=`` ` ``).
    pub escape: char,
    pub instructions: Vec<Instruction>,
}

fn at(file: &Path, line: usize, msg: impl Into<String>) -> Error {
    Error::format(format!("{}:{line}", file.display()), msg)
}

/// Shows user text in an error on one line.
fn show(s: &str) -> String {
    let s: String = s.chars().take(80).collect();
    s.escape_debug().to_string()
}

/// `# name=value` at the top of the file.
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let end = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
    let (name, rest) = rest.split_at(end);
    if name.is_empty() || !name.as_bytes()[0].is_ascii_alphabetic() {
        return None;
    }
    let value = rest.trim_start().strip_prefix('=')?.trim();
    (!value.is_empty()).then_some((name, value))
}

/// Strips a trailing escape character (and the blanks after it): BuildKit's
/// continuation rule.
fn trim_continuation(s: &str, escape: char) -> (&str, bool) {
    let t = s.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(head) => (head, true),
        None => (s, false),
    }
}

/// Heredoc markers (`<<EOF`, `<<-EOF`, `<<"EOF"`) among the words of `args`,
/// in order, with whether leading tabs are stripped.
fn heredoc_names(args: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for word in args.split_whitespace() {
        let w = word.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(rest) = w.strip_prefix("<<") else {
            continue;
        };
        if rest.starts_with('<') {
            continue; // a here-string, not a heredoc
        }
        let (rest, chomp) = match rest.strip_prefix('-') {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let rest = rest.trim_start_matches(['"', '\'']);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .collect();
        if !name.is_empty() {
            out.push((name, chomp));
        }
    }
    out
}

/// Splits a Dockerfile into instructions.
pub fn lex(file: &Path, text: &str) -> Result<Lexed> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let mut i = 0;
    let mut escape = '\\';
    let mut seen_escape = false;
    // Parser directives: only at the very top, before any other line.
    while let Some((name, value)) = lines.get(i).and_then(|l| directive(l)) {
        if name.eq_ignore_ascii_case("escape") {
            if seen_escape {
                return Err(at(file, i + 1, "the escape directive is given twice; keep only one"));
            }
            seen_escape = true;
            escape = match value {
                "\\" => '\\',
                "`" => '`',
                v => {
                    return Err(at(
                        file,
                        i + 1,
                        format!("escape directive `{}` is neither \\ nor `; use one of those", show(v)),
                    ));
                }
            };
        }
        i += 1;
    }
    let mut instructions = Vec::new();
    while i < lines.len() {
        let start = i + 1;
        let first = lines[i].trim_start();
        i += 1;
        if first.is_empty() || first.starts_with('#') {
            continue;
        }
        let (head, mut more) = trim_continuation(first, escape);
        let mut joined = head.to_string();
        while more && i < lines.len() {
            let next = lines[i];
            i += 1;
            let t = next.trim_start();
            // Comment and empty lines inside a continuation are dropped.
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let (part, m) = trim_continuation(next, escape);
            joined.push_str(part);
            more = m;
        }
        let joined = joined.trim();
        let (kw, args) = match joined.find(char::is_whitespace) {
            Some(p) => (&joined[..p], joined[p..].trim()),
            None => (joined, ""),
        };
        let keyword = kw.to_ascii_uppercase();
        if !KEYWORDS.contains(&keyword.as_str()) {
            return Err(at(
                file,
                start,
                format!(
                    "unknown instruction `{}`; Dockerfile instructions are FROM, RUN, COPY, ENV, … (is a line continuation missing a trailing {escape}?)",
                    show(kw)
                ),
            ));
        }
        let mut heredocs = Vec::new();
        if matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
            for (name, chomp) in heredoc_names(args) {
                let mut body = String::new();
                loop {
                    let Some(l) = lines.get(i) else {
                        return Err(at(
                            file,
                            start,
                            format!("heredoc `<<{name}` is never closed; end it with a line holding only `{name}`"),
                        ));
                    };
                    i += 1;
                    let l = if chomp { l.trim_start_matches('\t') } else { l };
                    if *l == name {
                        break;
                    }
                    body.push_str(l);
                    body.push('\n');
                }
                heredocs.push(Heredoc { name, body });
            }
        }
        instructions.push(Instruction {
            line: start,
            keyword,
            args: args.to_string(),
            heredocs,
        });
    }
    Ok(Lexed { escape, instructions })
}

/// Docker's word processing: quotes, the escape character and variable
/// substitution (`$V`, `${V}`, `${V:-x}`, `${V-x}`, `${V:+x}`, `${V+x}`,
/// `${V:?msg}`, `${V?msg}`). Variables not defined are empty and recorded.
struct Shell<'a> {
    c: Vec<char>,
    i: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    undefined: Vec<String>,
    /// Nesting of `${V:-${W:-…}}`: bounded, so a crafted file cannot
    /// overflow the stack.
    depth: usize,
}

/// Most instructions and stages read: real Dockerfiles have tens.
const MAX_INSTRUCTIONS: usize = 4096;
const MAX_STAGES: usize = 128;

/// Deepest `${…}` nesting read.
const MAX_NESTING: usize = 16;
/// Longest text one substitution may produce (`ARG B=$A$A` chains would
/// otherwise grow exponentially).
pub const MAX_EXPANSION: usize = 64 << 10;

fn too_long() -> String {
    format!("a value expands to more than {MAX_EXPANSION} bytes; kiln reads Dockerfiles with shorter ARG/ENV values")
}

impl<'a> Shell<'a> {
    fn new(s: &str, escape: char, lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Shell {
            c: s.chars().collect(),
            i: 0,
            escape,
            lookup,
            undefined: Vec::new(),
            depth: 0,
        }
    }

    fn next(&mut self) -> Option<char> {
        let c = self.c.get(self.i).copied();
        self.i += usize::from(c.is_some());
        c
    }

    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }

    /// Words (split at unquoted blanks, including blanks an unquoted
    /// variable expands to) or, with `split` false, the whole text as one.
    fn words(&mut self, split: bool) -> std::result::Result<Vec<String>, String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        // Bytes of the words already finished.
        let mut done = 0usize;
        while let Some(ch) = self.next() {
            if cur.len() > MAX_EXPANSION || done + cur.len() > 4 * MAX_EXPANSION {
                return Err(too_long());
            }
            if split && ch.is_whitespace() {
                if in_word {
                    done += cur.len();
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                continue;
            }
            match ch {
                c if c == self.escape => {
                    in_word = true;
                    cur.push(self.next().unwrap_or(c));
                }
                '\'' => {
                    in_word = true;
                    loop {
                        match self.next() {
                            Some('\'') => break,
                            Some(x) => cur.push(x),
                            None => return Err("a single quote is not closed; add the closing '".into()),
                        }
                    }
                }
                '"' => {
                    in_word = true;
                    self.double(&mut cur)?;
                }
                '$' => {
                    let v = self.dollar()?;
                    if split {
                        for c in v.chars() {
                            if c.is_whitespace() {
                                if in_word {
                                    done += cur.len();
                                    words.push(std::mem::take(&mut cur));
                                    in_word = false;
                                }
                            } else {
                                cur.push(c);
                                in_word = true;
                            }
                        }
                    } else {
                        cur.push_str(&v);
                        in_word = true;
                    }
                }
                c => {
                    in_word = true;
                    cur.push(c);
                }
            }
        }
        if in_word || !split {
            words.push(cur);
        }
        Ok(words)
    }

    fn double(&mut self, cur: &mut String) -> std::result::Result<(), String> {
        loop {
            match self.next() {
                None => return Err("a double quote is not closed; add the closing \"".into()),
                Some('"') => return Ok(()),
                Some(c) if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.i += 1;
                        cur.push(n);
                    }
                    _ => cur.push(c),
                },
                Some('$') => {
                    let v = self.dollar()?;
                    cur.push_str(&v);
                }
                Some(c) => cur.push(c),
            }
        }
    }

    fn get(&mut self, name: &str) -> Option<String> {
        let v = (self.lookup)(name);
        if v.is_none() && !self.undefined.iter().any(|u| u == name) {
            self.undefined.push(name.to_string());
        }
        v
    }

    /// After a `$`: the substituted text.
    fn dollar(&mut self) -> std::result::Result<String, String> {
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
        match self.peek() {
            Some('{') => {
                self.i += 1;
                let mut name = String::new();
                while let Some(c) = self.peek().filter(|c| is_name(*c)) {
                    name.push(c);
                    self.i += 1;
                }
                if name.is_empty() {
                    return Err("`${` without a variable name; write ${NAME}".into());
                }
                let op = match self.next() {
                    Some('}') => return Ok(self.get(&name).unwrap_or_default()),
                    Some(':') => match self.next() {
                        Some(c @ ('-' | '+' | '?')) => format!(":{c}"),
                        _ => return Err(unsupported(&name)),
                    },
                    Some(c @ ('-' | '+' | '?')) => c.to_string(),
                    None => return Err(format!("`${{{name}` is not closed; add the closing }}")),
                    Some(_) => return Err(unsupported(&name)),
                };
                // The word runs to the matching brace; it may nest `${…}`.
                let mut depth = 0usize;
                let mut word = String::new();
                loop {
                    match self.next() {
                        None => return Err(format!("`${{{name}{op}` is not closed; add the closing }}")),
                        Some('}') if depth == 0 => break,
                        Some(c) => {
                            if c == '{' && word.ends_with('$') {
                                depth += 1;
                            } else if c == '}' {
                                depth -= 1;
                            }
                            word.push(c);
                        }
                    }
                }
                let value = self.get(&name);
                let set = value.is_some();
                let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
                let use_word = match op.as_str() {
                    ":-" | ":?" => !non_empty,
                    "-" | "?" => !set,
                    ":+" => non_empty,
                    _ => set, // "+"
                };
                if !use_word {
                    return Ok(if op.ends_with('+') {
                        String::new()
                    } else {
                        value.unwrap_or_default()
                    });
                }
                if self.depth >= MAX_NESTING {
                    return Err(format!("`${{{name}…}}` nests deeper than {MAX_NESTING} levels"));
                }
                let mut sub = Shell::new(&word, self.escape, self.lookup);
                sub.depth = self.depth + 1;
                let expanded = sub.words(false)?.concat();
                if expanded.len() > MAX_EXPANSION {
                    return Err(too_long());
                }
                for u in sub.undefined {
                    if !self.undefined.contains(&u) {
                        self.undefined.push(u);
                    }
                }
                if op.ends_with('?') {
                    return Err(format!("${name} is not set: {expanded}"));
                }
                Ok(expanded)
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let mut name = String::new();
                while let Some(c) = self.peek().filter(|c| is_name(*c)) {
                    name.push(c);
                    self.i += 1;
                }
                Ok(self.get(&name).unwrap_or_default())
            }
            _ => Ok("$".into()),
        }
    }
}

/// Shell words of `s` with `vars` substituted (for reading `RUN cargo …`);
/// `None` when the text does not lex (an unclosed quote).
pub fn shell_words(s: &str, escape: char, vars: &[(String, String)]) -> Option<Vec<String>> {
    let lookup = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    Shell::new(s, escape, &lookup).words(true).ok()
}

fn unsupported(name: &str) -> String {
    format!(
        "unsupported substitution in `${{{name}…}}`; kiln reads ${{{name}}}, ${{{name}:-default}}, ${{{name}-default}}, ${{{name}:+alt}} and ${{{name}:?msg}}"
    )
}

/// A command in exec form (JSON array) or shell form (text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Exec(Vec<String>),
    Shell(String),
}

impl Form {
    /// Docker's rule: a JSON array of strings is exec form; anything else,
    /// including malformed JSON, is shell form.
    fn parse(args: &str) -> Form {
        let t = args.trim();
        if t.starts_with('[')
            && let Ok(v) = serde_json::from_str::<Vec<String>>(t)
        {
            return Form::Exec(v);
        }
        Form::Shell(t.to_string())
    }

    /// The argv Docker stores: shell form runs through the stage's SHELL.
    fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            Form::Exec(v) => v.clone(),
            Form::Shell(s) => shell.iter().cloned().chain([s.clone()]).collect(),
        }
    }

    /// The command as text (exec form joined with spaces).
    pub fn text(&self) -> String {
        match self {
            Form::Exec(v) => v.join(" "),
            Form::Shell(s) => s.clone(),
        }
    }
}

/// `HEALTHCHECK`: options as written, Docker's defaults left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `None` for `HEALTHCHECK NONE`.
    pub test: Option<Form>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub start_interval: Option<String>,
    pub retries: Option<u32>,
    pub line: usize,
}

/// An ENTRYPOINT or CMD as Docker stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub argv: Vec<String>,
    pub shell_form: bool,
    pub line: usize,
}

/// The image config a stage ends with (inherited from an earlier stage
/// when it is `FROM <stage>`). Order is Docker's: ENV and LABEL keep the
/// position of their first setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Canonical `PORT/PROTO`.
    pub ports: Vec<String>,
    pub entrypoint: Option<Command>,
    pub cmd: Option<Command>,
    pub healthcheck: Option<Healthcheck>,
    pub stop_signal: Option<String>,
    pub shell: Vec<String>,
    /// Directories known to exist (WORKDIR, COPY destinations ending in /).
    pub dirs: Vec<String>,
    /// Where each instruction that set a field was (keyword, line), in order.
    pub origin: Vec<(String, usize)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            env: Vec::new(),
            labels: Vec::new(),
            user: None,
            workdir: None,
            ports: Vec::new(),
            entrypoint: None,
            cmd: None,
            healthcheck: None,
            stop_signal: None,
            shell: DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
            dirs: Vec::new(),
            origin: Vec::new(),
        }
    }
}

fn set(list: &mut Vec<(String, String)>, k: String, v: String) {
    match list.iter_mut().find(|(key, _)| *key == k) {
        Some(e) => e.1 = v,
        None => list.push((k, v)),
    }
}

/// A COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub line: usize,
    pub add: bool,
    /// `--from=`: a stage index, or an image reference.
    pub from: Option<CopyFrom>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub srcs: Vec<String>,
    /// Absolute (resolved against WORKDIR), as written otherwise.
    pub dest: String,
    /// Docker copies into `dest/` (it ends with `/`, names a known directory, or there are several sources).
    pub dest_is_dir: bool,
    pub heredoc: bool,
    /// Flags kiln does not read (`--link`, `--exclude=…`).
    pub other_flags: Vec<String>,
}

/// Where a COPY --from reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFrom {
    Stage(usize),
    Image(String),
}

/// A RUN, with the variables it sees (ENV and ARG), for `cargo build` reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub line: usize,
    pub command: Form,
    pub vars: Vec<(String, String)>,
    pub heredoc: bool,
    /// The WORKDIR it runs in (`None`: the base's, `/` on most).
    pub workdir: Option<String>,
}

/// What a stage is built on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// An image reference as written (after ARG substitution); `scratch` too.
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// An instruction kiln does not carry (VOLUME, ONBUILD, SHELL, …) or a
/// remark about one, by line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remark {
    pub line: usize,
    pub text: String,
}

/// One `FROM` to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    pub line: usize,
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    pub base: Base,
    pub platform: Option<String>,
    pub config: Config,
    /// Lines where this stage set each ENV key.
    pub env_lines: Vec<(String, usize)>,
    pub copies: Vec<Copy>,
    pub runs: Vec<Run>,
    pub remarks: Vec<Remark>,
}

impl Stage {
    /// `name` or `#index` for messages.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("`{n}`"),
            None => format!("#{}", self.index),
        }
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub stages: Vec<Stage>,
    /// The escape character (for reading RUN lines).
    pub escape: char,
}

impl Dockerfile {
    /// Stage indexes from the root to `i`, following `FROM <stage>`.
    pub fn chain(&self, i: usize) -> Vec<usize> {
        let mut out = vec![i];
        let mut cur = i;
        while let Some(Base::Stage(p)) = self.stages.get(cur).map(|s| &s.base) {
            // Parents always come earlier, so this ends.
            if *p >= cur {
                break;
            }
            out.push(*p);
            cur = *p;
        }
        out.reverse();
        out
    }

    /// The image the chain ending at `i` starts from.
    pub fn root_image(&self, i: usize) -> &str {
        let root = self.chain(i)[0];
        match &self.stages[root].base {
            Base::Image(s) => s,
            Base::Stage(_) => "scratch",
        }
    }
}

/// Predefined platform ARGs BuildKit gives the global scope (kiln builds
/// for linux/amd64).
const PLATFORM_ARGS: [(&str, &str); 8] = [
    ("TARGETPLATFORM", "linux/amd64"),
    ("TARGETOS", "linux"),
    ("TARGETARCH", "amd64"),
    ("TARGETVARIANT", ""),
    ("BUILDPLATFORM", "linux/amd64"),
    ("BUILDOS", "linux"),
    ("BUILDARCH", "amd64"),
    ("BUILDVARIANT", ""),
];

/// Directories every non-scratch Linux base has; COPY onto them copies into them.
const BASE_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/local",
    "/etc",
    "/opt",
    "/srv",
    "/tmp",
    "/home",
    "/var",
];

/// `path` resolved against `dir` and cleaned (`.`, `..`, `//`).
pub fn resolve_path(dir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{dir}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `--name=value` flags at the start of `args`; returns them and the rest.
fn flags(args: &str) -> (Vec<(String, Option<String>)>, &str) {
    let mut out = Vec::new();
    let mut rest = args.trim_start();
    while let Some(f) = rest.strip_prefix("--") {
        let end = f.find(char::is_whitespace).unwrap_or(f.len());
        let word = &f[..end];
        match word.split_once('=') {
            Some((k, v)) => out.push((k.to_ascii_lowercase(), Some(v.to_string()))),
            None => out.push((word.to_ascii_lowercase(), None)),
        }
        rest = f[end..].trim_start();
    }
    (out, rest)
}

/// The state of the stage being read.
struct StageState {
    stage: Stage,
    /// ARGs declared in this stage (visible to substitution, not stored).
    args: Vec<(String, String)>,
    /// A CMD was set in this stage (an ENTRYPOINT then keeps it).
    cmd_set: bool,
    scratch: bool,
}

impl StageState {
    fn lookup(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.stage.config.env.iter().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        if let Some((_, v)) = self.args.iter().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        // BuildKit gives a base without PATH (scratch) the default one.
        (name == "PATH" && self.scratch).then(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())
    }
}

/// Reads `text` (the contents of `file`, named in errors).
pub fn parse(file: &Path, text: &str) -> Result<Dockerfile> {
    if text.len() > MAX_BYTES {
        return Err(Error::format(
            file.display().to_string(),
            format!(
                "{} bytes is over kiln's {MAX_BYTES}-byte limit for a Dockerfile; is this the right file?",
                text.len()
            ),
        ));
    }
    let lexed = lex(file, text)?;
    let escape = lexed.escape;
    let mut globals: Vec<(String, String)> = PLATFORM_ARGS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut stages: Vec<Stage> = Vec::new();
    let mut scratch_of: Vec<bool> = Vec::new();
    let mut cur: Option<StageState> = None;

    if lexed.instructions.len() > MAX_INSTRUCTIONS {
        return Err(at(
            file,
            lexed.instructions[MAX_INSTRUCTIONS].line,
            format!("more than {MAX_INSTRUCTIONS} instructions; kiln init reads Dockerfiles of ordinary size"),
        ));
    }
    for ins in &lexed.instructions {
        let line = ins.line;
        let err = |msg: String| at(file, line, msg);
        let kw = ins.keyword.as_str();
        if kw == "FROM" {
            if let Some(s) = cur.take() {
                stages.push(s.stage);
            }
            if stages.len() >= MAX_STAGES {
                return Err(err(format!(
                    "more than {MAX_STAGES} stages; kiln init reads at most {MAX_STAGES}"
                )));
            }
            let (fl, rest) = flags(&ins.args);
            let global = |n: &str| globals.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let mut platform = None;
            for (k, v) in fl {
                match (k.as_str(), v) {
                    ("platform", Some(v)) => {
                        let mut sh = Shell::new(&v, escape, &global);
                        platform = Some(sh.words(false).map_err(err)?.concat());
                    }
                    (k, _) => return Err(err(format!("FROM has no flag --{k}; only --platform=… is allowed"))),
                }
            }
            let mut sh = Shell::new(rest, escape, &global);
            let words = sh.words(true).map_err(err)?;
            let (image, name) = match words.as_slice() {
                [] => (String::new(), None),
                [image] => (image.clone(), None),
                [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    (image.clone(), Some(name.to_ascii_lowercase()))
                }
                _ => {
                    return Err(err(format!(
                        "`FROM {}` is not `FROM [--platform=…] IMAGE [AS NAME]`; write it in that form",
                        show(&ins.args)
                    )));
                }
            };
            if image.is_empty() {
                return Err(err(format!(
                    "`FROM {}` names no image once ARGs are substituted; give the ARG a default before the first FROM",
                    show(rest)
                )));
            }
            if let Some(n) = &name
                && stages.iter().any(|s| s.name.as_deref() == Some(n))
            {
                return Err(err(format!(
                    "stage name `{}` is used twice; name each stage once",
                    show(n)
                )));
            }
            let parent = stages
                .iter()
                .position(|s| s.name.as_deref() == Some(image.to_ascii_lowercase().as_str()));
            let (base, config) = match parent {
                Some(p) => (Base::Stage(p), stages[p].config.clone()),
                None => (Base::Image(image.clone()), Config::default()),
            };
            // Whether each stage's chain starts FROM scratch, kept as stages
            // are read (no copy of every earlier stage per FROM).
            let scratch = match parent {
                Some(p) => scratch_of[p],
                None => image == "scratch",
            };
            scratch_of.push(scratch);
            cur = Some(StageState {
                stage: Stage {
                    index: stages.len(),
                    line,
                    name,
                    base,
                    platform,
                    config,
                    env_lines: Vec::new(),
                    copies: Vec::new(),
                    runs: Vec::new(),
                    remarks: Vec::new(),
                },
                args: Vec::new(),
                cmd_set: false,
                scratch,
            });
            continue;
        }
        let Some(st) = cur.as_mut() else {
            if kw == "ARG" {
                let lookup = |n: &str| globals.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                let parsed = parse_args(&ins.args, escape, &lookup).map_err(err)?;
                for (k, v) in parsed {
                    set(&mut globals, k, v.unwrap_or_default());
                }
                continue;
            }
            return Err(err(format!(
                "{kw} before the first FROM; only ARG may come before FROM, so move it into a stage"
            )));
        };
        if matches!(kw, "LABEL" | "USER" | "WORKDIR" | "STOPSIGNAL" | "EXPOSE") {
            st.stage.config.origin.push((kw.to_string(), line));
        }
        let lookup = |n: &str| st.lookup(n);
        match kw {
            "ARG" => {
                let parsed = parse_args(&ins.args, escape, &lookup).map_err(err)?;
                for (k, v) in parsed {
                    // `ARG NAME` in a stage brings in the global's value.
                    let v = v.or_else(|| globals.iter().find(|(g, _)| *g == k).map(|(_, v)| v.clone()));
                    set(&mut st.args, k, v.unwrap_or_default());
                }
            }
            "ENV" | "LABEL" => {
                let mut sh = Shell::new("", escape, &lookup);
                let pairs = name_values(kw, &ins.args, &mut sh).map_err(err)?;
                let undefined = std::mem::take(&mut sh.undefined);
                note_undefined(&mut st.stage.remarks, line, kw, &undefined);
                for (k, v) in pairs {
                    if kw == "ENV" {
                        st.stage.env_lines.retain(|(e, _)| *e != k);
                        st.stage.env_lines.push((k.clone(), line));
                        set(&mut st.stage.config.env, k, v);
                    } else {
                        set(&mut st.stage.config.labels, k, v);
                    }
                }
            }
            "USER" | "WORKDIR" | "STOPSIGNAL" => {
                let mut sh = Shell::new(&ins.args, escape, &lookup);
                let v = sh.words(false).map_err(err)?.concat();
                let v = v.trim().to_string();
                let undefined = std::mem::take(&mut sh.undefined);
                note_undefined(&mut st.stage.remarks, line, kw, &undefined);
                if v.is_empty() {
                    return Err(err(format!("{kw} needs a value; write e.g. {}", example(kw))));
                }
                match kw {
                    "USER" => st.stage.config.user = Some(v),
                    "STOPSIGNAL" => st.stage.config.stop_signal = Some(v),
                    _ => {
                        let dir = if v.starts_with('/') {
                            v
                        } else {
                            resolve_path(st.stage.config.workdir.as_deref().unwrap_or("/"), &v)
                        };
                        st.stage.config.dirs.push(dir.clone());
                        st.stage.config.workdir = Some(dir);
                    }
                }
            }
            "EXPOSE" => {
                let mut sh = Shell::new(&ins.args, escape, &lookup);
                let words = sh.words(true).map_err(err)?;
                let undefined = std::mem::take(&mut sh.undefined);
                note_undefined(&mut st.stage.remarks, line, kw, &undefined);
                for w in words {
                    for p in expose(&w).map_err(err)? {
                        if !st.stage.config.ports.contains(&p) {
                            st.stage.config.ports.push(p);
                        }
                    }
                }
            }
            "CMD" | "ENTRYPOINT" => {
                let form = Form::parse(&ins.args);
                if let Form::Shell(s) = &form
                    && s.starts_with('[')
                {
                    st.stage.remarks.push(Remark {
                        line,
                        text: format!(
                            "{kw} starts with [ but is not a JSON array of strings, so Docker runs it as shell form"
                        ),
                    });
                }
                let c = Command {
                    argv: form.argv(&st.stage.config.shell),
                    shell_form: matches!(form, Form::Shell(_)),
                    line,
                };
                if kw == "CMD" {
                    st.stage.config.cmd = Some(c);
                    st.cmd_set = true;
                } else {
                    st.stage.config.entrypoint = Some(c);
                    // Docker: an ENTRYPOINT drops the CMD inherited from the
                    // parent, unless this stage set one before it.
                    if !st.cmd_set {
                        st.stage.config.cmd = None;
                    }
                }
            }
            "HEALTHCHECK" => {
                st.stage.config.healthcheck = Some(healthcheck(&ins.args, line).map_err(err)?);
            }
            "SHELL" => match Form::parse(&ins.args) {
                Form::Exec(v) if !v.is_empty() => {
                    st.stage.config.shell = v;
                    st.stage.remarks.push(Remark {
                        line,
                        text: "SHELL changes the shell of later shell-form commands; kiln writes those commands with it, but has no SHELL of its own".into(),
                    });
                }
                _ => {
                    return Err(err(
                        "SHELL needs a JSON array, e.g. SHELL [\"/bin/bash\", \"-c\"]".into()
                    ));
                }
            },
            "COPY" | "ADD" => {
                let c = copy(ins, escape, st, &stages).map_err(err)?;
                if c.dest_is_dir && !st.stage.config.dirs.contains(&c.dest) {
                    st.stage.config.dirs.push(c.dest.clone());
                }
                st.stage.copies.push(c);
            }
            "RUN" => {
                let (_, rest) = flags(&ins.args);
                // The variables are kept only for cargo commands (read for
                // flags later), and only those the command names: a long
                // file of ENV and RUN lines stays linear.
                let mut vars: Vec<(String, String)> = Vec::new();
                if rest.contains("cargo") {
                    for (k, v) in st.stage.config.env.iter().chain(st.args.iter()) {
                        if rest.contains(k.as_str()) && !vars.iter().any(|(e, _)| e == k) {
                            vars.push((k.clone(), v.clone()));
                        }
                    }
                }
                st.stage.runs.push(Run {
                    line,
                    command: Form::parse(rest),
                    vars,
                    heredoc: !ins.heredocs.is_empty(),
                    workdir: st.stage.config.workdir.clone(),
                });
            }
            _ => st.stage.remarks.push(Remark {
                line,
                text: format!("{kw} {}", show(&ins.args)),
            }),
        }
    }
    match cur {
        Some(s) => stages.push(s.stage),
        None => {
            return Err(Error::format(
                file.display().to_string(),
                "no FROM instruction; a Dockerfile starts its first stage with FROM IMAGE",
            ));
        }
    }
    Ok(Dockerfile { stages, escape })
}

fn example(kw: &str) -> &'static str {
    match kw {
        "USER" => "USER 65532:65532",
        "WORKDIR" => "WORKDIR /app",
        _ => "STOPSIGNAL SIGTERM",
    }
}

fn note_undefined(remarks: &mut Vec<Remark>, line: usize, kw: &str, undefined: &[String]) {
    for u in undefined {
        remarks.push(Remark {
            line,
            text: format!(
                "{kw} uses ${u}, which this Dockerfile does not define (it may come from the base image); kiln substituted an empty value"
            ),
        });
    }
}

/// `ARG A`, `ARG A=1 B=2`.
fn parse_args(
    args: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Vec<(String, Option<String>)>, String> {
    let mut sh = Shell::new(args, escape, lookup);
    let words = sh.words(true)?;
    if words.is_empty() {
        return Err("ARG needs a name; write ARG NAME or ARG NAME=default".into());
    }
    Ok(words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w, None),
        })
        .collect())
}

/// `ENV K=V K2="v 2"` or legacy `ENV K V` (likewise LABEL). Substitution
/// uses the variables from before the line, as Docker does.
fn name_values(kw: &str, args: &str, sh: &mut Shell<'_>) -> std::result::Result<Vec<(String, String)>, String> {
    let first = args.split_whitespace().next().unwrap_or("");
    if first.is_empty() {
        return Err(format!("{kw} needs NAME=VALUE; write e.g. {kw} NAME=value"));
    }
    let sub = |text: &str, sh: &mut Shell<'_>, split: bool| {
        let mut inner = Shell::new(text, sh.escape, sh.lookup);
        let w = inner.words(split);
        sh.undefined.extend(inner.undefined);
        w
    };
    if !first.contains('=') {
        let mut parts = args.splitn(2, char::is_whitespace);
        let name = parts.next().unwrap_or_default();
        let value = parts.next().map(str::trim_start).unwrap_or("");
        if value.is_empty() {
            return Err(format!("{kw} {name} has no value; write {kw} {name}=VALUE"));
        }
        let name = sub(name, sh, false)?.concat();
        let value = sub(value, sh, false)?.concat();
        return Ok(vec![(name, value)]);
    }
    let mut out = Vec::new();
    for w in sub(args, sh, true)? {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            _ => {
                return Err(format!(
                    "`{}` is not NAME=VALUE; in `{kw} A=1 B=2` form every word needs an = (quote values with blanks)",
                    show(&w)
                ));
            }
        }
    }
    Ok(out)
}

/// `8080`, `8080/tcp`, `53/udp`, `8000-8002` → canonical `PORT/PROTO`s.
fn expose(w: &str) -> std::result::Result<Vec<String>, String> {
    let bad = || {
        format!(
            "EXPOSE `{}` is not PORT[/tcp|udp|sctp] with PORT in 1..65535; write e.g. EXPOSE 8080 53/udp",
            show(w)
        )
    };
    let (ports, proto) = w.split_once('/').unwrap_or((w, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        return Err(bad());
    }
    let (lo, hi) = ports.split_once('-').unwrap_or((ports, ports));
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if lo == 0 || hi < lo {
        return Err(bad());
    }
    if hi - lo >= 1000 {
        return Err(format!(
            "EXPOSE {} is a range of over 1000 ports; list the ports the program listens on",
            show(w)
        ));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// `HEALTHCHECK [--opt=…] CMD …` or `HEALTHCHECK NONE`.
fn healthcheck(args: &str, line: usize) -> std::result::Result<Healthcheck, String> {
    let (fl, rest) = flags(args);
    let mut h = Healthcheck {
        test: None,
        interval: None,
        timeout: None,
        start_period: None,
        start_interval: None,
        retries: None,
        line,
    };
    for (k, v) in fl {
        let Some(v) = v else {
            return Err(format!("HEALTHCHECK --{k} needs a value, e.g. --{k}=30s"));
        };
        match k.as_str() {
            "interval" => h.interval = Some(v),
            "timeout" => h.timeout = Some(v),
            "start-period" => h.start_period = Some(v),
            "start-interval" => h.start_interval = Some(v),
            "retries" => {
                h.retries = Some(v.parse().map_err(|_| {
                    format!(
                        "HEALTHCHECK --retries=`{}` is not a whole number; write e.g. --retries=3",
                        show(&v)
                    )
                })?)
            }
            k => {
                return Err(format!(
                    "HEALTHCHECK has no option --{k}; it takes --interval, --timeout, --start-period, --start-interval and --retries"
                ));
            }
        }
    }
    let (word, cmd) = match rest.find(char::is_whitespace) {
        Some(p) => (&rest[..p], rest[p..].trim()),
        None => (rest, ""),
    };
    if word.eq_ignore_ascii_case("NONE") {
        return Ok(h);
    }
    if !word.eq_ignore_ascii_case("CMD") || cmd.is_empty() {
        return Err("HEALTHCHECK needs `CMD command …` or `NONE`".into());
    }
    h.test = Some(Form::parse(cmd));
    Ok(h)
}

fn copy(ins: &Instruction, escape: char, st: &StageState, stages: &[Stage]) -> std::result::Result<Copy, String> {
    let kw = ins.keyword.as_str();
    let (fl, rest) = flags(&ins.args);
    let lookup = |n: &str| st.lookup(n);
    let sub =
        |s: &str| -> std::result::Result<String, String> { Ok(Shell::new(s, escape, &lookup).words(false)?.concat()) };
    let mut c = Copy {
        line: ins.line,
        add: kw == "ADD",
        from: None,
        chown: None,
        chmod: None,
        srcs: Vec::new(),
        dest: String::new(),
        dest_is_dir: false,
        heredoc: !ins.heredocs.is_empty(),
        other_flags: Vec::new(),
    };
    for (k, v) in fl {
        match (k.as_str(), v) {
            ("from", Some(v)) => {
                let v = sub(&v)?;
                let lower = v.to_ascii_lowercase();
                let stage = stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(lower.as_str()))
                    .or_else(|| v.parse::<usize>().ok().filter(|i| *i < stages.len()));
                c.from = Some(match stage {
                    Some(i) => CopyFrom::Stage(i),
                    None if v.parse::<usize>().is_ok() => {
                        return Err(format!(
                            "{kw} --from={v}: there is no earlier stage #{v}; name a stage defined above"
                        ));
                    }
                    None => CopyFrom::Image(v),
                });
            }
            ("chown", Some(v)) => c.chown = Some(sub(&v)?),
            ("chmod", Some(v)) => c.chmod = Some(sub(&v)?),
            (k, v) => c.other_flags.push(match v {
                Some(v) => format!("--{k}={v}"),
                None => format!("--{k}"),
            }),
        }
    }
    let mut words = match Form::parse(rest) {
        Form::Exec(v) => v.iter().map(|w| sub(w)).collect::<std::result::Result<Vec<_>, _>>()?,
        Form::Shell(s) => Shell::new(&s, escape, &lookup).words(true)?,
    };
    let need = if c.heredoc { 1 } else { 2 };
    if words.len() < need {
        return Err(format!("{kw} needs a source and a destination: {kw} SRC… DEST"));
    }
    let dest = words.pop().unwrap_or_default();
    c.srcs = words;
    let workdir = st.stage.config.workdir.as_deref().unwrap_or("/");
    let abs = resolve_path(workdir, &dest);
    let known = st.stage.config.dirs.contains(&abs) || (!st.scratch && BASE_DIRS.contains(&abs.as_str()));
    c.dest_is_dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.") || c.srcs.len() > 1 || known;
    c.dest = abs;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn df(text: &str) -> Dockerfile {
        parse(Path::new("Dockerfile"), text).unwrap()
    }

    fn err(text: &str) -> String {
        parse(Path::new("Dockerfile"), text).unwrap_err().to_string()
    }

    fn last(d: &Dockerfile) -> &Config {
        &d.stages.last().unwrap().config
    }

    #[test]
    fn comments_directives_continuations_and_case() {
        let d = df(
            "# syntax=docker/dockerfile:1\n# escape=`\n\n# a comment\nfrom scratch\nenv A=1 `\n  # inside\n\n  B=2\nCmd [\"/x\"]\n",
        );
        let c = last(&d);
        assert_eq!(c.env, [("A".into(), "1".into()), ("B".into(), "2".into())]);
        assert_eq!(c.cmd.as_ref().unwrap().argv, ["/x"]);
        // Backslash is an ordinary character with the backtick escape.
        let d = df("# escape=`\nFROM scratch\nWORKDIR C:\\app\n");
        assert_eq!(last(&d).workdir.as_deref(), Some("/C:\\app"));
        // A directive after a comment is just a comment.
        let d = df("# hello\n# escape=`\nFROM scratch\nENV A=1 \\\n B=2\n");
        assert_eq!(last(&d).env.len(), 2);
    }

    #[test]
    fn heredocs_are_skipped() {
        let d = df(
            "FROM debian\nRUN <<EOF\napt-get update\nFROM nope\nEOF\nCOPY <<-CONF /etc/app.conf\n\tkey=1\n\tCONF\nUSER 1\n",
        );
        let s = &d.stages[0];
        assert_eq!(d.stages.len(), 1);
        assert!(s.runs[0].heredoc && s.copies[0].heredoc);
        assert_eq!(s.copies[0].dest, "/etc/app.conf");
        assert_eq!(s.config.user.as_deref(), Some("1"));
        assert!(err("FROM debian\nRUN <<EOF\nno end\n").starts_with("Dockerfile:2: heredoc `<<EOF` is never closed"));
    }

    #[test]
    fn args_scope_and_substitution() {
        let d = df(concat!(
            "ARG RUST_VERSION=1.96\nARG BASE\n",
            "FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-slim AS Build\n",
            "FROM ${BASE:-debian:bookworm-slim}\n",
            "ARG RUST_VERSION\nARG NAME=app\n",
            "ENV A=$NAME B=${NAME:+set} C=${MISSING:-dflt} D=${MISSING-x} E=${NAME-y}\n",
            "ENV A=changed F=$A\n",
            "LABEL version=\"$RUST_VERSION\" 'q'='single $NAME'\n",
            "LABEL legacy value with spaces\n",
        ));
        assert_eq!(d.stages[0].base, Base::Image("rust:1.96-slim".into()));
        assert_eq!(d.stages[0].name.as_deref(), Some("build"));
        assert_eq!(d.stages[0].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(d.stages[1].base, Base::Image("debian:bookworm-slim".into()));
        let c = last(&d);
        let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(env, ["A=changed", "B=set", "C=dflt", "D=x", "E=app", "F=app"]);
        assert_eq!(
            c.labels,
            [
                ("version".into(), "1.96".into()),
                ("q".into(), "single $NAME".into()),
                ("legacy".into(), "value with spaces".into())
            ]
        );
        assert!(err("FROM scratch\nENV A=${B:?must be set}\n").starts_with("Dockerfile:2: $B is not set: must be set"));
        assert!(err("FROM scratch\nENV A=${B/x/y}\n").contains("unsupported substitution"));
        assert!(err("FROM scratch\nENV A=\"open\n").contains("double quote is not closed"));
    }

    #[test]
    fn legacy_env_and_quotes() {
        let d = df("FROM scratch\nENV PATH_EXTRA /opt/bin:$PATH\nENV Q \"a b\"\nENV K1=\"v 2\" K2=a\\ b\n");
        let c = last(&d);
        assert_eq!(
            c.env[0].1,
            "/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        );
        assert_eq!(c.env[1].1, "a b");
        assert_eq!(c.env[2], ("K1".into(), "v 2".into()));
        assert_eq!(c.env[3], ("K2".into(), "a b".into()));
        assert!(err("FROM scratch\nENV A=1 B\n").contains("is not NAME=VALUE"));
    }

    #[test]
    fn exec_and_shell_forms_and_entrypoint_resets_cmd() {
        let d = df(concat!(
            "FROM debian AS base\nCMD [\"serve\"]\n",
            "FROM base AS a\nENTRYPOINT [\"/app\"]\n",
            "FROM base AS b\nCMD [\"x\"]\nENTRYPOINT exec /app\n",
            "FROM base\nCMD ['not', 'json']\n",
        ));
        assert_eq!(d.stages[1].config.cmd, None);
        assert_eq!(d.stages[2].config.cmd.as_ref().unwrap().argv, ["x"]);
        assert_eq!(
            d.stages[2].config.entrypoint.as_ref().unwrap().argv,
            ["/bin/sh", "-c", "exec /app"]
        );
        let c = &d.stages[3].config;
        assert_eq!(c.cmd.as_ref().unwrap().argv, ["/bin/sh", "-c", "['not', 'json']"]);
        assert_eq!(d.chain(3), [0, 3]);
        let d = df("FROM debian\nSHELL [\"/bin/bash\", \"-lc\"]\nCMD run it\n");
        assert_eq!(last(&d).cmd.as_ref().unwrap().argv, ["/bin/bash", "-lc", "run it"]);
    }

    #[test]
    fn expose_workdir_user_healthcheck() {
        let d = df(concat!(
            "FROM scratch\nARG P=8080\nEXPOSE $P 53/UDP 9000-9001\nWORKDIR app\nWORKDIR ../srv/./x\n",
            "USER ${U:-65532:65532}\nSTOPSIGNAL SIGINT\n",
            "HEALTHCHECK --interval=5s --timeout=2s --retries=3 CMD [\"/app\", \"--health\"]\n",
        ));
        let c = last(&d);
        assert_eq!(c.ports, ["8080/tcp", "53/udp", "9000/tcp", "9001/tcp"]);
        assert_eq!(c.workdir.as_deref(), Some("/srv/x"));
        assert_eq!(c.user.as_deref(), Some("65532:65532"));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
        let h = c.healthcheck.as_ref().unwrap();
        assert_eq!(h.test, Some(Form::Exec(vec!["/app".into(), "--health".into()])));
        assert_eq!(
            (h.interval.as_deref(), h.timeout.as_deref(), h.retries),
            (Some("5s"), Some("2s"), Some(3))
        );
        assert_eq!(h.start_period, None);
        let d = df("FROM scratch\nHEALTHCHECK NONE\n");
        assert_eq!(last(&d).healthcheck.as_ref().unwrap().test, None);
        let d = df("FROM scratch\nhealthcheck cmd curl -f http://localhost/ || exit 1\n");
        assert_eq!(
            last(&d).healthcheck.as_ref().unwrap().test,
            Some(Form::Shell("curl -f http://localhost/ || exit 1".into()))
        );
        assert!(err("FROM scratch\nEXPOSE http\n").starts_with("Dockerfile:2: EXPOSE `http`"));
        assert!(err("FROM scratch\nHEALTHCHECK --retries=x CMD a\n").contains("--retries"));
        assert!(err("FROM scratch\nHEALTHCHECK --bogus=1 CMD a\n").contains("no option --bogus"));
    }

    #[test]
    fn copy_forms() {
        let d = df(concat!(
            "FROM rust:1.96 AS build\nWORKDIR /src\n",
            "FROM scratch\nWORKDIR /srv\n",
            "COPY --from=BUILD --chmod=0755 /src/target/release/app /app\n",
            "COPY --from=0 /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/\n",
            "COPY [\"static\", \"conf\"]\n",
            "COPY a b ./out/\nCOPY --link x .\nCOPY --from=alpine:3 /bin/busybox /bin/\n",
        ));
        let s = &d.stages[1];
        assert_eq!(s.copies[0].from, Some(CopyFrom::Stage(0)));
        assert_eq!((s.copies[0].dest.as_str(), s.copies[0].dest_is_dir), ("/app", false));
        assert_eq!(s.copies[0].chmod.as_deref(), Some("0755"));
        assert!(s.copies[1].dest_is_dir);
        assert_eq!(
            (s.copies[2].dest.as_str(), s.copies[2].dest_is_dir),
            ("/srv/conf", false)
        );
        assert_eq!((s.copies[3].dest.as_str(), s.copies[3].dest_is_dir), ("/srv/out", true));
        assert_eq!((s.copies[4].dest.as_str(), s.copies[4].dest_is_dir), ("/srv", true));
        assert_eq!(s.copies[4].other_flags, ["--link"]);
        assert_eq!(s.copies[5].from, Some(CopyFrom::Image("alpine:3".into())));
        assert!(err("FROM scratch\nCOPY --from=3 a /b\n").contains("no earlier stage #3"));
    }

    #[test]
    fn errors_name_path_and_line() {
        assert!(err("RUN x\n").starts_with("Dockerfile:1: RUN before the first FROM"));
        assert!(err("FROM scratch\nFORM x\n").starts_with("Dockerfile:2: unknown instruction `FORM`"));
        assert!(err("FROM a AS x\nFROM b AS X\n").starts_with("Dockerfile:2: stage name `x` is used twice"));
        assert!(err("FROM a b\n").starts_with("Dockerfile:1: `FROM a b`"));
        assert!(err("ARG X\nFROM $X\n").starts_with("Dockerfile:2: `FROM $X` names no image"));
        assert!(err("# escape=x\nFROM a\n").starts_with("Dockerfile:1: escape directive"));
        assert!(err("\n# only a comment\n").contains("no FROM instruction"));
        let big = "#".repeat(MAX_BYTES + 1);
        assert!(err(&big).contains("limit for a Dockerfile"));
    }

    #[test]
    fn crafted_files_are_refused_in_bounded_time_and_memory() {
        let f = Path::new("Dockerfile");
        // ARG B=$A$A doubling: 2^40 bytes if unbounded.
        let mut text = String::from("ARG A0=xxxxxxxxxxxxxxxx\n");
        for i in 1..40 {
            text.push_str(&format!("ARG A{i}=$A{}$A{}\n", i - 1, i - 1));
        }
        text.push_str("FROM scratch\n");
        let e = parse(f, &text).unwrap_err().to_string();
        assert!(e.contains("expands to more than"), "{e}");
        // ${A:-${A:-…}} nested far deeper than any real file.
        let deep = format!("FROM scratch\nENV X={}y{}\n", "${A:-".repeat(5000), "}".repeat(5000));
        let e = parse(f, &deep).unwrap_err().to_string();
        assert!(e.contains("nests deeper"), "{e}");
        // Thousands of stages, each FROM the previous one.
        let mut many = String::from("FROM scratch AS s0\n");
        for i in 1..3000 {
            many.push_str(&format!("FROM s{} AS s{i}\n", i - 1));
        }
        let e = parse(f, &many).unwrap_err().to_string();
        assert!(e.contains("stages"), "{e}");
        let long = "FROM scratch\n".to_string() + &"ENV A=1\n".repeat(5000);
        assert!(parse(f, &long).unwrap_err().to_string().contains("instructions"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse(Path::new("Dockerfile"), &s);
        }

        #[test]
        fn never_panics_on_dockerfile_shaped_text(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    "(FROM|from|ARG|ENV|LABEL|COPY|ADD|RUN|CMD|ENTRYPOINT|EXPOSE|USER|WORKDIR|HEALTHCHECK|STOPSIGNAL|SHELL) [-a-zA-Z0-9 =:$@{}\\[\\]\"'\\\\/.,<`?+]{0,30}",
                    "# (escape|syntax)=[\\\\`a-z]",
                    "[ \\t]*\\\\?",
                    "<<-?[A-Z]{1,3}",
                ],
                0..12,
            )
        ) {
            let _ = parse(Path::new("Dockerfile"), &lines.join("\n"));
        }
    }
}
