//! The documentation cannot rot: every TOML block of `README.md` and `docs/**/*.md` that is a
//! whole config (it has a `[[sources]]` or `[settings]` table) is parsed and validated by the
//! real config loader, and every relative link points at a file (and heading) that exists.
//!
//! Any other TOML block is a piece of a config and must say so with an HTML comment
//! `<!-- fragment -->` on the line before its fence (invisible on GitHub): a block that is
//! neither whole nor marked fails, so an example cannot slip out of validation by accident.
//!
//! The examples reference secrets by name (`env:STRIPE_WEBHOOK_SECRET`); they get dummy values
//! of the shape each provider insists on through the secret environment, never by editing the
//! examples.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use inlet::config::{self, ConfigDoc, SecretEnv};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `README.md` and every Markdown file under `docs/`, relative to the repository root.
fn doc_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let name = rel.join(path.file_name().expect("a file name"));
            if path.is_dir() {
                walk(&path, &name, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(name);
            }
        }
    }
    let mut files = vec![PathBuf::from("README.md")];
    walk(&repo_root().join("docs"), Path::new("docs"), &mut files);
    files
}

/// A fenced code block: its info string, its text, the line of its opening fence (1-based),
/// the heading above it, and whether the line before the fence marks it as a fragment.
struct Block {
    info: String,
    text: String,
    line: usize,
    heading: String,
    fragment: bool,
}

/// What the checks need from one Markdown file: its code blocks, its headings' anchors, and
/// the link targets in its prose (code blocks and code spans left out), with their lines.
struct Page {
    blocks: Vec<Block>,
    anchors: BTreeSet<String>,
    links: Vec<(usize, String)>,
}

const FRAGMENT: &str = "<!-- fragment -->";

fn parse_page(text: &str) -> Page {
    let mut page = Page {
        blocks: Vec::new(),
        anchors: BTreeSet::new(),
        links: Vec::new(),
    };
    let mut slugs: BTreeMap<String, usize> = BTreeMap::new();
    let mut heading = String::new();
    let mut open: Option<(usize, Block)> = None;
    let mut previous = "";
    // The prose lines since the last blank line, heading or fence: a code span may run over
    // several lines of one paragraph, so links are looked for a paragraph at a time.
    let mut paragraph: Vec<(usize, &str)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence = trimmed.len() - trimmed.trim_start_matches('`').len();
        match &mut open {
            Some((width, block)) => {
                if fence >= *width && trimmed.trim_end().len() == fence {
                    let (_, block) = open.take().expect("an open block");
                    page.blocks.push(block);
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                }
            }
            None if fence >= 3 => {
                page.links.extend(paragraph_links(&paragraph));
                paragraph.clear();
                open = Some((
                    fence,
                    Block {
                        info: trimmed[fence..].trim().to_owned(),
                        text: String::new(),
                        line: n + 1,
                        heading: heading.clone(),
                        fragment: previous.trim() == FRAGMENT,
                    },
                ));
            }
            None if line.trim().is_empty() => {
                page.links.extend(paragraph_links(&paragraph));
                paragraph.clear();
            }
            None => {
                if let Some(title) = heading_text(line) {
                    page.links.extend(paragraph_links(&paragraph));
                    paragraph.clear();
                    heading = title.to_owned();
                    let base = slug(title);
                    let seen = slugs.entry(base.clone()).or_insert(0);
                    page.anchors.insert(if *seen == 0 {
                        base
                    } else {
                        format!("{base}-{seen}")
                    });
                    *seen += 1;
                }
                paragraph.push((n + 1, line));
            }
        }
        previous = line;
    }
    assert!(open.is_none(), "a code block is never closed");
    page.links.extend(paragraph_links(&paragraph));
    page
}

/// The link targets of one paragraph, each with the line it is on.
fn paragraph_links(paragraph: &[(usize, &str)]) -> Vec<(usize, String)> {
    let Some(&(first, _)) = paragraph.first() else {
        return Vec::new();
    };
    let text: Vec<&str> = paragraph.iter().map(|(_, l)| *l).collect();
    let prose = blank_code_spans(&text.join("\n"));
    link_targets(&prose)
        .into_iter()
        .map(|(at, target)| (first + prose[..at].matches('\n').count(), target))
        .collect()
}

fn heading_text(line: &str) -> Option<&str> {
    let hashes = line.len() - line.trim_start_matches('#').len();
    if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
        return None;
    }
    Some(line[hashes..].trim().trim_end_matches('#').trim())
}

/// The anchor GitHub gives a heading: its text lower-cased, code-span backticks and every
/// character but letters, digits, `_`, `-` and spaces removed, spaces turned into `-`.
fn slug(title: &str) -> String {
    title
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The text with every code span (`…`, ``…``) blanked out, line breaks kept: links are not
/// looked for inside code. A backtick run without its closing run is literal text.
fn blank_code_spans(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let run = rest[start..].len() - rest[start..].trim_start_matches('`').len();
        let after = &rest[start + run..];
        match after.find(&"`".repeat(run)) {
            Some(end) => {
                let span = &rest[start..start + run + end + run];
                out.extend(span.chars().map(|c| if c == '\n' { c } else { ' ' }));
                rest = &after[end + run..];
            }
            None => {
                out.push_str(&rest[start..start + run]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of the inline links `[text](target)` and images in `text`, with the byte
/// offset of each.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("](") {
        let start = from + at + 2;
        let Some(end) = text[start..].find(')') else {
            break;
        };
        let target = text[start..start + end]
            .split_whitespace()
            .next()
            .unwrap_or("");
        out.push((start, target.to_owned()));
        from = start + end;
    }
    out
}

/// Dummy secrets of the shape each provider checks. Names not listed get `DEFAULT`: a
/// Standard Webhooks `whsec_` key (24 bytes once decoded), which is also a valid HMAC key, a
/// valid Telegram token (no `+`, `/` or `=`) and a valid Twitch secret.
struct DocSecrets;

const DEFAULT: &str = "whsec_aW5sZXQtZG9jcy1leGFtcGxlLWtleS0x";
const SHAPED: &[(&str, &str)] = &[
    // Public keys: the test keys of shared/testdata/vectors.json.
    (
        "DISCORD_PUBLIC_KEY",
        "33d0283fbf6d6672ab310e97f6b87995515fffe6cb1a4c7f04226b9f391f58ec",
    ),
    (
        "SENDGRID_PUBLIC_KEY",
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==",
    ),
    (
        "ADYEN_HMAC_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ),
    ("ADYEN_BASIC_AUTH", "adyen-docs:example-password"),
    ("POSTMARK_BASIC_AUTH", "postmark-docs:example-password"),
];

impl SecretEnv for DocSecrets {
    fn var(&self, name: &str) -> Option<String> {
        let value = SHAPED
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(DEFAULT, |(_, v)| v);
        Some(value.to_owned())
    }

    /// `ssm:` and `secretsmanager:` references, as a Lambda would have read them.
    fn remote(&self, _reference: &str) -> Option<String> {
        Some(DEFAULT.to_owned())
    }
}

fn is_whole_config(toml: &str) -> bool {
    toml.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("[[sources]]") || l.starts_with("[settings]")
    })
}

/// Parse and validate one example as the loader does a file in `dir`.
fn validate_example(toml: &str, dir: &Path) -> Result<config::Config, String> {
    let doc = ConfigDoc::parse(toml, Some("toml")).map_err(|e| e.to_string())?;
    config::validate(doc, dir.to_path_buf(), &DocSecrets).map_err(|e| e.to_string())
}

/// Every problem in the TOML blocks of one page, and how many whole configs it validated.
fn check_examples(file: &Path, page: &Page) -> (Vec<String>, usize) {
    let dir = repo_root().join(file.parent().unwrap_or(Path::new("")));
    let mut problems = Vec::new();
    let mut validated = 0;
    for block in page.blocks.iter().filter(|b| b.info == "toml") {
        let at = format!("{}:{}", file.display(), block.line);
        match (is_whole_config(&block.text), block.fragment) {
            (true, true) => problems.push(format!(
                "{at}: a whole config marked {FRAGMENT}: remove the mark so it is validated"
            )),
            (false, false) => problems.push(format!(
                "{at}: a TOML block without [[sources]] or [settings]: make it a whole config, \
                 or put {FRAGMENT} on the line before it"
            )),
            (false, true) => {}
            (true, false) => match validate_example(&block.text, &dir) {
                Ok(_) => validated += 1,
                Err(e) => problems.push(format!("{at}: {e}")),
            },
        }
    }
    (problems, validated)
}

/// `path` with `.` and `..` folded, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every problem with the links of one page, and how many it checked.
fn check_links(
    file: &Path,
    page: &Page,
    anchors: &BTreeMap<PathBuf, BTreeSet<String>>,
) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    for (line, target) in &page.links {
        let at = format!("{}:{line}: ({target})", file.display());
        if target.contains("://") || target.starts_with("mailto:") || target.starts_with("//") {
            problems.push(format!(
                "{at}: links outside the repository; the docs are self-contained"
            ));
            continue;
        }
        let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
        // An anchor alone points into the page being read.
        let linked = if path.is_empty() {
            file.to_path_buf()
        } else {
            let linked = normalise(&file.parent().unwrap_or(Path::new("")).join(path));
            if linked.starts_with("..") || !repo_root().join(&linked).exists() {
                problems.push(format!("{at}: no file {}", linked.display()));
                continue;
            }
            linked
        };
        if anchor.is_empty() {
            continue;
        }
        match anchors.get(&linked) {
            Some(known) if known.contains(anchor) => {}
            Some(_) => problems.push(format!(
                "{at}: {} has no heading #{anchor}",
                linked.display()
            )),
            None => problems.push(format!(
                "{at}: #{anchor} points into a file that is not Markdown"
            )),
        }
    }
    (problems, page.links.len())
}

fn read(file: &Path) -> String {
    std::fs::read_to_string(repo_root().join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn every_config_example_in_the_docs_is_valid_and_every_link_resolves() {
    let pages: Vec<(PathBuf, Page)> = doc_files()
        .into_iter()
        .map(|f| {
            let page = parse_page(&read(&f));
            (f, page)
        })
        .collect();
    let anchors: BTreeMap<PathBuf, BTreeSet<String>> = pages
        .iter()
        .map(|(f, p)| (f.clone(), p.anchors.clone()))
        .collect();

    let mut problems = Vec::new();
    let (mut validated, mut links) = (0, 0);
    for (file, page) in &pages {
        let (p, n) = check_examples(file, page);
        problems.extend(p);
        validated += n;
        let (p, n) = check_links(file, page, &anchors);
        problems.extend(p);
        links += n;
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    // A scanner that found nothing would pass vacuously: the docs hold well over these.
    assert!(
        validated >= 10,
        "only {validated} configs found in the docs"
    );
    assert!(links >= 100, "only {links} links found in the docs");
}

/// The reference's config "with every key" sets each `[settings]` key to its default: parsed,
/// it must be exactly what the code defaults to, so a default changed in one place and not
/// the other fails here.
#[test]
fn the_settings_in_the_every_key_example_are_the_codes_defaults() {
    let file = Path::new("docs/configuration.md");
    let page = parse_page(&read(file));
    let block = page
        .blocks
        .iter()
        .find(|b| b.info == "toml" && b.heading == "A config with every key")
        .expect("docs/configuration.md has a toml block under \"A config with every key\"");
    let mut doc = ConfigDoc::parse(&block.text, Some("toml")).expect("the example parses");
    // Its only default that is not a value: it follows max_receive_count, which the example
    // sets to its own default, so the example writes that number out.
    assert_eq!(
        doc.settings.retry_attempts,
        Some(doc.settings.max_receive_count)
    );
    doc.settings.retry_attempts = None;
    assert_eq!(
        format!("{:?}", doc.settings),
        format!("{:?}", config::Settings::default())
    );
}

/// The checks themselves: a block or link that is wrong is reported, so the test above cannot
/// pass on docs it failed to read.
#[test]
fn a_broken_example_or_link_is_reported() {
    let page = parse_page(concat!(
        "# Title\n\n",
        "## A `[settings]` table (here)\n\n",
        "```toml\n[settings]\nmax_body_bytes = 0\n```\n\n",
        "```toml\n[[sources]]\nid = \"a\"\nprovider = \"github\"\nsecrets = [\"env:A\"]\n",
        "colour = \"blue\"\n```\n\n",
        "```toml\nid = \"bus\"\n```\n\n",
        "<!-- fragment -->\n```toml\nkind = \"eventbridge\"\n```\n\n",
        "<!-- fragment -->\n```toml\n[settings]\n```\n\n",
        "[ok](#a-settings-table-here) [gone](#nowhere) [away](https://example.com/) ",
        "`[code](not-a-link.md)` [missing](missing.md) [up](../../outside.md)\n",
        "`a code span over\ntwo lines, [code](nor-this.md)` then [after](also-missing.md)\n",
    ));
    let (problems, validated) = check_examples(Path::new("docs/page.md"), &page);
    assert_eq!(validated, 0, "{problems:#?}");
    let expect = [
        (
            "docs/page.md:5: ",
            "settings.max_body_bytes: must be between 1",
        ),
        ("docs/page.md:10: ", "unknown field `colour`"),
        (
            "docs/page.md:18: ",
            "a TOML block without [[sources]] or [settings]",
        ),
        (
            "docs/page.md:28: ",
            "a whole config marked <!-- fragment -->",
        ),
    ];
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    for (got, (at, says)) in problems.iter().zip(expect) {
        assert!(
            got.starts_with(at) && got.contains(says),
            "{got:?} is not {at}…{says}…"
        );
    }

    let anchors = BTreeMap::from([(PathBuf::from("docs/page.md"), page.anchors.clone())]);
    let (problems, checked) = check_links(Path::new("docs/page.md"), &page, &anchors);
    assert_eq!(checked, 6, "links in code spans are not links");
    let expect = [
        "docs/page.md:32: (#nowhere): docs/page.md has no heading #nowhere",
        "docs/page.md:32: (https://example.com/): links outside the repository",
        "docs/page.md:32: (missing.md): no file docs/missing.md",
        "docs/page.md:32: (../../outside.md): no file ../outside.md",
        "docs/page.md:34: (also-missing.md): no file docs/also-missing.md",
    ];
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    for (got, want) in problems.iter().zip(expect) {
        assert!(
            got.starts_with(want),
            "{got:?} does not start with {want:?}"
        );
    }
}

/// The README's quickstart drives `make dev`'s config: the sources it posts to and the
/// secret it signs with by hand must be that config's, or the quickstart answers 404 or 401.
#[test]
fn the_readme_quickstart_matches_the_dev_config() {
    let dev = Path::new("infra/dev/inlet.toml");
    let cfg = config::load_file(&repo_root().join(dev), &|_: &str| None).expect("dev config");
    let dev_text = read(dev);
    let readme = parse_page(&read(Path::new("README.md")));
    let commands: String = readme
        .blocks
        .iter()
        .filter(|b| b.info == "sh")
        .map(|b| b.text.as_str())
        .collect();

    let after = |marker: &str| -> Vec<String> {
        commands
            .split(marker)
            .skip(1)
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
                    .collect()
            })
            .collect()
    };
    let sources: Vec<String> = [after("/webhooks/"), after("--source ")]
        .concat()
        .into_iter()
        .filter(|id| !id.is_empty())
        .collect();
    assert!(!sources.is_empty(), "the quickstart sends to no source");
    for id in &sources {
        assert!(cfg.source(id).is_some(), "{dev:?} has no source {id:?}");
    }
    let secrets = after("-hmac ");
    assert!(!secrets.is_empty(), "the quickstart signs with no secret");
    for secret in &secrets {
        assert!(
            dev_text.contains(&format!("\"literal:{secret}\"")),
            "{dev:?} has no secret {secret:?}"
        );
    }
}
