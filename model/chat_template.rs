//! The model's Jinja chat template, compiled once and rendered per request with minijinja.
//!
//! Configured like transformers' renderer (`trim_blocks`, `lstrip_blocks`, loop controls,
//! `raise_exception`, Python string methods through minijinja-contrib's pycompat) so HF templates
//! render as they do there. Message content is data, never template source, but a template still
//! loops over it: fuel and a recursion limit bound what one render may cost.

use minijinja::{context, Environment, Error, ErrorKind, Value};
use serde_json::{Map, Value as Json};
use std::collections::HashSet;

/// Instructions one render may execute; generous for real templates (a few hundred per message),
/// small enough that a hostile request fails fast instead of spinning.
const FUEL: u64 = 5_000_000;
/// Nesting depth (macros, includes, nested loops) a template may reach.
const RECURSION_LIMIT: usize = 64;
const NAME: &str = "chat";

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// The top-level variables the template reads (a static analysis of its source).
    reads: HashSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template itself refused the conversation (`raise_exception`), e.g. roles that do not
    /// alternate: the client's fault.
    #[error("the chat template rejected the messages: {0}")]
    Rejected(String),
    #[error("rendering the chat template took too long (out of fuel)")]
    OutOfFuel,
    /// Any other runtime error: the template cannot render these messages (it compiled, so the
    /// messages are what differs), e.g. `+` on a null `content`.
    #[error("the chat template cannot render these messages: {0}")]
    Failed(String),
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are the texts templates may reference.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| anyhow::anyhow!("the model's chat template does not compile: {e}"))?;
        let reads = env.get_template(NAME)?.undeclared_variables(false);
        Ok(ChatTemplate {
            reads,
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Whether the template reads the top-level variable `name` anywhere in its source.
    pub fn reads(&self, name: &str) -> bool {
        self.reads.contains(name)
    }

    /// Whether the template renders the `tools` it is given (HF's tool-calling convention).
    pub fn uses_tools(&self) -> bool {
        self.reads("tools")
    }

    /// The prompt text for `messages` (already checked by `messages::parse_messages`).
    pub fn render(
        &self,
        messages: &[Json],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with(messages, add_generation_prompt, None, &Map::new())
    }

    /// [`render`](Self::render) with `tools` (HF's `[{"type": "function", "function": …}]`) in
    /// the template's `tools` variable (`None` renders it as `none`, as transformers passes it)
    /// and `extra` variables in the context (`chat_template_kwargs`); where a name is also one
    /// the renderer sets, the renderer's value wins.
    pub fn render_with(
        &self,
        messages: &[Json],
        add_generation_prompt: bool,
        tools: Option<&[Json]>,
        extra: &Map<String, Json>,
    ) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| TemplateError::Failed(e.to_string()))?;
        tmpl.render(context! {
            messages => Value::from_serialize(messages),
            tools => tools.map(Value::from_serialize),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            ..Value::from_serialize(extra)
        })
        .map_err(|e| match e.kind() {
            ErrorKind::OutOfFuel => TemplateError::OutOfFuel,
            ErrorKind::InvalidOperation if is_raised(&e) => {
                TemplateError::Rejected(e.detail().unwrap_or("invalid conversation").to_string())
            }
            _ => TemplateError::Failed(format!("{e:#}")),
        })
    }
}

const RAISED: &str = "raised: ";

fn is_raised(e: &Error) -> bool {
    e.detail().is_some_and(|d| d.starts_with(RAISED))
}

/// `raise_exception(msg)`, which HF templates call to refuse a conversation.
fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{msg}"),
    ))
}

/// `strftime_now(fmt)` (Llama 3 templates put today's date in the system prompt). Only the
/// common `%d %b %Y`-style fields are supported; others pass through unchanged.
fn strftime_now(fmt: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month = MONTHS[(m - 1) as usize];
    fmt.replace("%d", &format!("{d:02}"))
        .replace("%m", &format!("{m:02}"))
        .replace("%Y", &y.to_string())
        .replace("%B", month)
        .replace("%b", &month[..3])
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    fn user(text: &str) -> Vec<Json> {
        vec![json!({"role": "user", "content": text})]
    }

    #[test]
    fn chatml_renders_with_the_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&user("hi"), true).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&user("hi"), false).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n"
        );
    }

    #[test]
    fn hf_style_templates_work() {
        // Python string methods, bos_token, raise_exception, block trimming, namespace, loop controls.
        let src = "{{ bos_token }}{% set ns = namespace(n=0) %}\n{% for m in messages %}\n  {% if m.role not in ['user', 'assistant'] %}{{ raise_exception('only user/assistant: ' + m.role) }}{% endif %}\n  {% set ns.n = ns.n + 1 %}\n{{ m.role.upper() }}: {{ m.content.strip() }}{{ eos_token }}\n{% if loop.index > 5 %}{% break %}{% endif %}\n{% endfor %}\n{{ ns.n }}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&user("  hi  "), true).unwrap(),
            "<s>USER: hi</s>\n1"
        );
        let err = t
            .render(&[json!({"role": "tool", "content": "x"})], true)
            .unwrap_err();
        assert!(
            matches!(err, TemplateError::Rejected(ref m) if m.contains("only user/assistant")),
            "{err}"
        );
    }

    #[test]
    fn hostile_content_is_just_text() {
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        let evil = "{% for i in range(999999999) %}{{ i }}{% endfor %}{{ raise_exception('x') }}";
        let out = t.render(&user(evil), true).unwrap();
        assert!(out.contains(evil));
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel() {
        let src =
            "{% for i in range(50000) %}{% for j in range(50000) %}{{ j }}{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            t.render(&user("x"), true),
            Err(TemplateError::OutOfFuel)
        ));
        assert!(started.elapsed().as_secs() < 10);
    }

    #[test]
    fn deep_recursion_fails_cleanly() {
        let src = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert!(t.render(&user("x"), true).is_err());
    }

    /// A template in the style of Qwen's and Llama 3.1's: tools listed in the system turn, calls
    /// of assistant turns written from their parsed arguments, tool results as their own turns.
    const TOOL_TEMPLATE: &str = "{% if tools %}<tools>{% for t in tools %}{{ t.function.name }}:{{ t.function.parameters | tojson }};{% endfor %}</tools>\n{% endif %}{% for m in messages %}{{ m.role }}: {% if m.tool_calls %}{% for c in m.tool_calls %}<call>{{ c.function.name }}({{ c.function.arguments.city }}){% endfor %}{% else %}{{ m.content }}{% endif %}{% if m.tool_call_id %} [{{ m.tool_call_id }}]{% endif %}{{ '\\n' }}{% endfor %}";

    #[test]
    fn tools_reach_a_template_that_uses_them() {
        let t = ChatTemplate::new(TOOL_TEMPLATE, "", "").unwrap();
        assert!(t.uses_tools());
        assert!(!ChatTemplate::new(CHATML, "", "").unwrap().uses_tools());
        // Llama 3.1 defaults the variable before reading it; it still reads the request's.
        let llama = "{% if not tools is defined %}{% set tools = none %}{% endif %}{% if tools is not none %}x{% endif %}";
        assert!(ChatTemplate::new(llama, "", "").unwrap().uses_tools());
        let tools = [
            json!({"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object"}}}),
        ];
        let messages = [
            json!({"role": "user", "content": "weather?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "-3C"}),
        ];
        assert_eq!(
            t.render_with(&messages, false, Some(&tools), &Map::new()).unwrap(),
            "<tools>get_weather:{\"type\":\"object\"};</tools>\nuser: weather?\nassistant: <call>get_weather(Oslo)\ntool: -3C [call_1]\n"
        );
        let without = t.render(&messages[..1], false).unwrap();
        assert_eq!(without, "user: weather?\n");
    }

    #[test]
    fn extra_variables_reach_the_template_but_not_over_the_renderers_own() {
        let src = "{% if enable_thinking is defined and not enable_thinking %}NOTHINK {% endif %}{{ messages[0].content }}|{{ bos_token }}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        assert!(t.reads("enable_thinking") && !t.reads("reasoning_effort"));
        let extra = |v: Json| v.as_object().unwrap().clone();
        assert_eq!(t.render(&user("hi"), true).unwrap(), "hi|<s>");
        assert_eq!(
            t.render_with(
                &user("hi"),
                true,
                None,
                &extra(json!({"enable_thinking": false}))
            )
            .unwrap(),
            "NOTHINK hi|<s>"
        );
        assert_eq!(
            t.render_with(&user("hi"), true, None, &extra(json!({"bos_token": "X"})))
                .unwrap(),
            "hi|<s>"
        );
    }

    #[test]
    fn a_broken_template_is_reported_at_load() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert!(!strftime_now("%d %b %Y".into()).contains('%'));
    }
}
