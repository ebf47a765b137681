//! Alert label and annotation templates: the part of Go's text/template that Prometheus rule
//! files use. `{{ $labels.x }}` / `{{ .Labels.x }}`, `{{ $value }}` / `{{ .Value }}`,
//! `{{ $externalURL }}`, quoted strings and numbers, pipelines (`{{ $value | humanize }}`)
//! and the functions `humanize`, `humanize1024`, `humanizePercentage`, `humanizeDuration`,
//! `printf`, `toUpper`, `toLower`, `title`. Anything else is rejected when the rule loads,
//! never half-rendered at evaluation.

use crate::labels::Labels;

/// What a template can refer to.
pub struct TemplateData<'a> {
    pub labels: &'a Labels,
    pub value: f64,
    pub external_url: &'a str,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Text(String),
    Pipeline(Vec<Command>),
}

#[derive(Clone, Debug, PartialEq)]
struct Command {
    function: Option<Function>,
    args: Vec<Term>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Function {
    Humanize,
    Humanize1024,
    HumanizePercentage,
    HumanizeDuration,
    Printf,
    ToUpper,
    ToLower,
    Title,
}

#[derive(Clone, Debug, PartialEq)]
enum Term {
    Label(String),
    Value,
    ExternalUrl,
    Str(String),
    Num(f64),
}

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Num(f64),
}

/// Why a template was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed action: a {{{{ without }}}}")]
    Unclosed,
    #[error("empty command in {{{{ {0} }}}}")]
    EmptyCommand(String),
    #[error("unsupported template action {{{{ {action} }}}}: {function:?} is not a known function")]
    UnknownFunction { action: String, function: String },
    #[error("unsupported template term {0:?}: use $labels.NAME, $value, $externalURL, a quoted string or a number")]
    UnknownTerm(String),
    #[error("unterminated string in {{{{ {0} }}}}")]
    UnterminatedString(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let mut literal = &rest[..open];
            let after = &rest[open + 2..];
            let (after, trim_left) = match after.strip_prefix("- ") {
                Some(a) => (a, true),
                None => (after, false),
            };
            if trim_left {
                literal = literal.trim_end();
            }
            if !literal.is_empty() {
                segments.push(Segment::Text(literal.to_string()));
            }
            let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
            let mut action = &after[..close];
            rest = &after[close + 2..];
            if let Some(a) = action.strip_suffix(" -") {
                action = a;
                rest = rest.trim_start();
            }
            let action = action.trim();
            if action.starts_with("/*") {
                continue;
            }
            segments.push(Segment::Pipeline(parse_pipeline(action)?));
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_string()));
        }
        Ok(Template { segments })
    }

    pub fn render(&self, data: &TemplateData<'_>) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Pipeline(commands) => out.push_str(&display(&run(commands, data))),
            }
        }
        out
    }
}

/// Parses and renders in one go; for templates already checked at load.
pub fn expand(text: &str, data: &TemplateData<'_>) -> String {
    match Template::parse(text) {
        Ok(template) => template.render(data),
        Err(_) => text.to_string(),
    }
}

fn parse_pipeline(action: &str) -> Result<Vec<Command>, TemplateError> {
    let tokens = tokenize(action)?;
    let mut commands = Vec::new();
    for part in tokens.split(|t| t == "|") {
        let Some((first, args)) = part.split_first() else {
            return Err(TemplateError::EmptyCommand(action.to_string()));
        };
        let function = match first.as_str() {
            "humanize" => Some(Function::Humanize),
            "humanize1024" => Some(Function::Humanize1024),
            "humanizePercentage" => Some(Function::HumanizePercentage),
            "humanizeDuration" => Some(Function::HumanizeDuration),
            "printf" => Some(Function::Printf),
            "toUpper" => Some(Function::ToUpper),
            "toLower" => Some(Function::ToLower),
            "title" => Some(Function::Title),
            _ => None,
        };
        let terms = match function {
            Some(_) => args,
            None => part,
        };
        if function.is_none() && terms.len() != 1 {
            return Err(TemplateError::UnknownFunction { action: action.to_string(), function: first.to_string() });
        }
        let args = terms.iter().map(|t| parse_term(t)).collect::<Result<Vec<_>, _>>()?;
        commands.push(Command { function, args });
    }
    Ok(commands)
}

fn parse_term(token: &str) -> Result<Term, TemplateError> {
    if let Some(name) = token.strip_prefix("$labels.").or_else(|| token.strip_prefix(".Labels.")) {
        return Ok(Term::Label(name.to_string()));
    }
    match token {
        "$value" | ".Value" => return Ok(Term::Value),
        "$externalURL" | ".ExternalURL" => return Ok(Term::ExternalUrl),
        _ => {}
    }
    if token.starts_with('"') || token.starts_with('`') {
        let inner = &token[1..token.len() - 1];
        return Ok(Term::Str(if token.starts_with('"') {
            serde_json::from_str(token).unwrap_or_else(|_| inner.to_string())
        } else {
            inner.to_string()
        }));
    }
    if let Ok(n) = token.parse::<f64>() {
        return Ok(Term::Num(n));
    }
    Err(TemplateError::UnknownTerm(token.to_string()))
}

fn tokenize(text: &str) -> Result<Vec<String>, TemplateError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '|' {
            chars.next();
            tokens.push("|".into());
        } else if c == '"' || c == '`' {
            chars.next();
            let mut escaped = false;
            let mut end = None;
            for (i, d) in chars.by_ref() {
                if c == '"' && escaped {
                    escaped = false;
                } else if c == '"' && d == '\\' {
                    escaped = true;
                } else if d == c {
                    end = Some(i);
                    break;
                }
            }
            let end = end.ok_or_else(|| TemplateError::UnterminatedString(text.to_string()))?;
            tokens.push(text[start..=end].to_string());
        } else {
            let mut end = text.len();
            while let Some(&(i, d)) = chars.peek() {
                if d.is_whitespace() || d == '|' {
                    end = i;
                    break;
                }
                chars.next();
            }
            tokens.push(text[start..end].to_string());
        }
    }
    Ok(tokens)
}

fn run(commands: &[Command], data: &TemplateData<'_>) -> Val {
    let mut piped: Option<Val> = None;
    for command in commands {
        let mut args: Vec<Val> = command
            .args
            .iter()
            .map(|term| match term {
                Term::Label(name) => Val::Str(data.labels.get(name).cloned().unwrap_or_default()),
                Term::Value => Val::Num(data.value),
                Term::ExternalUrl => Val::Str(data.external_url.to_string()),
                Term::Str(s) => Val::Str(s.clone()),
                Term::Num(n) => Val::Num(*n),
            })
            .collect();
        args.extend(piped.take());
        piped = Some(match command.function {
            None => args.pop().unwrap_or(Val::Str(String::new())),
            Some(Function::Printf) => {
                let mut args = args.into_iter();
                let format = args.next().map(|v| display(&v)).unwrap_or_default();
                Val::Str(printf(&format, &args.collect::<Vec<_>>()))
            }
            Some(function) => {
                let arg = args.pop().unwrap_or(Val::Str(String::new()));
                apply(function, arg)
            }
        });
    }
    piped.unwrap_or(Val::Str(String::new()))
}

fn number(value: &Val) -> f64 {
    match value {
        Val::Num(n) => *n,
        Val::Str(s) => s.trim().parse().unwrap_or(f64::NAN),
    }
}

fn apply(function: Function, arg: Val) -> Val {
    let text = |s: String| Val::Str(s);
    match function {
        Function::Humanize => text(humanize(number(&arg))),
        Function::Humanize1024 => text(humanize1024(number(&arg))),
        Function::HumanizePercentage => text(format!("{}%", format_g(number(&arg) * 100.0, 4))),
        Function::HumanizeDuration => text(humanize_duration(number(&arg))),
        Function::ToUpper => text(display(&arg).to_uppercase()),
        Function::ToLower => text(display(&arg).to_lowercase()),
        Function::Title => {
            let mut out = String::new();
            let mut start = true;
            for c in display(&arg).chars() {
                out.extend(if start { c.to_uppercase().collect::<Vec<_>>() } else { vec![c] });
                start = c.is_whitespace();
            }
            text(out)
        }
        Function::Printf => arg,
    }
}

fn display(value: &Val) -> String {
    match value {
        Val::Str(s) => s.clone(),
        Val::Num(n) => format_go_float(*n),
    }
}

/// Go's `%v` for a float64: shortest representation, exponent form below 1e-4 and from 1e6
/// (`fmt.Println(1e6)` prints `1e+06`).
pub fn format_go_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if value == 0.0 {
        return "0".into();
    }
    let shortest = format!("{value:e}");
    let exponent = shortest.split_once('e').and_then(|(_, e)| e.parse::<i32>().ok()).unwrap_or(0);
    if !(-4..6).contains(&exponent) { go_exponent(&shortest) } else { format!("{value}") }
}

/// Rust writes `1.5e7`, Go `1.5e+07`.
fn go_exponent(rust: &str) -> String {
    match rust.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => rust.to_string(),
    }
}

/// Go's `%.<precision>g`: significant digits, trailing zeros dropped.
pub fn format_g(value: f64, precision: usize) -> String {
    if !value.is_finite() {
        return format_go_float(value);
    }
    if value == 0.0 {
        return "0".into();
    }
    let precision = precision.max(1);
    let exponent =
        format!("{:.*e}", precision - 1, value).split_once('e').and_then(|(_, e)| e.parse::<i32>().ok()).unwrap_or(0);
    if exponent < -4 || exponent >= precision as i32 {
        let text = format!("{:.*e}", precision - 1, value);
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = trim_zeros(mantissa);
        go_exponent(&format!("{mantissa}e{exp}"))
    } else {
        let decimals = (precision as i32 - 1 - exponent).max(0) as usize;
        trim_zeros(&format!("{value:.decimals$}")).to_string()
    }
}

fn trim_zeros(text: &str) -> &str {
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { text }
}

/// Prometheus' `humanize`: SI prefixes, four significant digits.
pub fn humanize(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format_g(value, 4);
    }
    if value.abs() >= 1.0 {
        let prefixes = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"];
        let mut v = value;
        let mut i = 0;
        while v.abs() >= 1000.0 && i < prefixes.len() - 1 {
            v /= 1000.0;
            i += 1;
        }
        format!("{}{}", format_g(v, 4), prefixes[i])
    } else {
        let prefixes = ["", "m", "u", "n", "p", "f", "a", "z", "y"];
        let mut v = value;
        let mut i = 0;
        while v.abs() < 1.0 && i < prefixes.len() - 1 {
            v *= 1000.0;
            i += 1;
        }
        format!("{}{}", format_g(v, 4), prefixes[i])
    }
}

fn humanize1024(value: f64) -> String {
    if value.abs() <= 1.0 || !value.is_finite() {
        return format_g(value, 4);
    }
    let prefixes = ["", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"];
    let mut v = value;
    let mut i = 0;
    while v.abs() >= 1024.0 && i < prefixes.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{}{}", format_g(v, 4), prefixes[i])
}

/// Prometheus' `humanizeDuration`: `1d 2h 3m 4s`, or ms/us/ns below a second.
pub fn humanize_duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return format_g(seconds, 4);
    }
    let sign = if seconds < 0.0 { "-" } else { "" };
    let v = seconds.abs();
    if v == 0.0 {
        return "0s".into();
    }
    if v < 1.0 {
        let (scaled, unit) = if v >= 1e-3 {
            (v * 1e3, "ms")
        } else if v >= 1e-6 {
            (v * 1e6, "us")
        } else {
            (v * 1e9, "ns")
        };
        return format!("{sign}{}{unit}", format_g(scaled, 4));
    }
    let total = v as u64;
    let (days, hours, minutes, secs) = (total / 86400, total / 3600 % 24, total / 60 % 60, total % 60);
    let mut out = String::from(sign);
    if days > 0 {
        out += &format!("{days}d {hours}h {minutes}m {secs}s");
    } else if hours > 0 {
        out += &format!("{hours}h {minutes}m {secs}s");
    } else if minutes > 0 {
        out += &format!("{minutes}m {secs}s");
    } else {
        out += &format!("{}s", format_g(v, 4));
    }
    out
}

/// The verbs rule annotations use: `%s %v %d %f %g %e %q %%`, with width and precision.
fn printf(format: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() || d == '.' || d == '-' || d == '+' {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let Some(verb) = chars.next() else {
            out.push('%');
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let precision = spec.split_once('.').and_then(|(_, p)| p.parse::<usize>().ok());
        let Some(arg) = args.next() else {
            out += &format!("%!{verb}(MISSING)");
            continue;
        };
        let formatted = match verb {
            'f' | 'F' => format!("{:.*}", precision.unwrap_or(6), number(arg)),
            'e' => go_exponent(&format!("{:.*e}", precision.unwrap_or(6), number(arg))),
            'g' => precision.map_or_else(|| format_go_float(number(arg)), |p| format_g(number(arg), p)),
            'd' => format!("{}", number(arg).trunc() as i64),
            'q' => format!("{:?}", display(arg)),
            _ => display(arg),
        };
        let width =
            spec.split('.').next().and_then(|w| w.trim_start_matches(['-', '+']).parse::<usize>().ok()).unwrap_or(0);
        if spec.starts_with('-') {
            out += &format!("{formatted:<width$}");
        } else {
            out += &format!("{formatted:>width$}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str, value: f64) -> String {
        let labels: Labels =
            [("instance".to_string(), "web-1".to_string()), ("job".to_string(), "api".to_string())].into();
        Template::parse(text).unwrap().render(&TemplateData {
            labels: &labels,
            value,
            external_url: "http://vigil:9400",
        })
    }

    #[test]
    fn labels_values_and_pipelines() {
        assert_eq!(render("{{ $labels.instance }} of {{.Labels.job}} is down", 1.0), "web-1 of api is down");
        assert_eq!(render("value {{ $value }}", 0.25), "value 0.25");
        assert_eq!(render("{{ $value }}", 1234567.0), "1.234567e+06");
        assert_eq!(render("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(render("{{ humanize $value }}", 0.00123), "1.23m");
        assert_eq!(render("{{ $value | humanizePercentage }}", 0.1234), "12.34%");
        assert_eq!(render("{{ $value | humanizeDuration }}", 3725.0), "1h 2m 5s");
        assert_eq!(render(r#"{{ printf "%.2f" $value }}"#, 2.34567), "2.35");
        assert_eq!(render(r#"{{ $value | printf "%.1f%%" }}"#, 99.95), "100.0%");
        assert_eq!(render("{{ $labels.missing }}|", 0.0), "|");
        assert_eq!(render("a {{- $labels.job -}} b", 0.0), "aapib");
        assert_eq!(render("{{ $externalURL }}/alerts", 0.0), "http://vigil:9400/alerts");
        assert_eq!(render("{{ $labels.job | toUpper }}", 0.0), "API");
    }

    #[test]
    fn unsupported_constructs_fail_at_load() {
        assert!(Template::parse("{{ range $labels }}x{{ end }}").is_err());
        assert!(Template::parse("{{ $labels.x").is_err());
        assert!(Template::parse("{{ $foo }}").is_err());
        assert!(Template::parse("{{ query \"up\" }}").is_err());
    }

    #[test]
    fn go_float_formatting() {
        assert_eq!(format_go_float(100.0), "100");
        assert_eq!(format_go_float(0.00001), "1e-05");
        assert_eq!(format_go_float(f64::NAN), "NaN");
        assert_eq!(format_g(14.4000001, 4), "14.4");
        assert_eq!(format_g(123456.0, 4), "1.235e+05");
    }
}
