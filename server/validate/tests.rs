use super::*;
use serde_json::json;

/// The field policy (validate/fields.rs) against OpenAI's field lists and the README.
mod fields;

const LIMITS: Limits = Limits { vocab_size: 512 };

fn completions(body: Value) -> R<ValidRequest> {
    validate(body.to_string().as_bytes(), Endpoint::Completions, LIMITS)
}

fn chat(body: Value) -> R<ValidRequest> {
    validate(body.to_string().as_bytes(), Endpoint::Chat, LIMITS)
}

fn param_of(r: R<ValidRequest>) -> Option<String> {
    r.expect_err("should be rejected").param()
}

#[test]
fn a_minimal_completion_gets_the_defaults() {
    let r = completions(json!({"model": "m", "prompt": "hi"})).unwrap();
    assert_eq!(r.input, Input::Prompt(Prompt::Text("hi".into())));
    assert_eq!(r.max_tokens, None);
    assert_eq!(r.n, 1);
    assert!(!r.stream && !r.include_usage && !r.want_logprobs);
    assert_eq!(r.params, SamplingParams::default());
}

#[test]
fn every_parameter_is_read() {
    let r = completions(json!({
        "prompt": [1, 2, 3], "max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "top_k": 7,
        "min_p": 0.1, "presence_penalty": 1, "frequency_penalty": -1, "repetition_penalty": 1.1,
        "seed": -1, "stop": ["a", "b"], "n": 2, "logprobs": 3, "ignore_eos": true,
        "stream": true, "stream_options": {"include_usage": true}, "unknown_field": {"x": 1},
        "stop_token_ids": [4], "priority": -3, "user": "team-a"
    }))
    .unwrap();
    assert_eq!(r.input, Input::Prompt(Prompt::Ids(vec![1, 2, 3])));
    assert_eq!(r.max_tokens, Some(5));
    let p = &r.params;
    assert_eq!(
        (p.temperature, p.top_p, p.top_k, p.min_p),
        (0.5, 0.9, 7, 0.1)
    );
    assert_eq!(
        (
            p.presence_penalty,
            p.frequency_penalty,
            p.repetition_penalty
        ),
        (1.0, -1.0, 1.1)
    );
    assert_eq!(p.seed, Some(u64::MAX));
    assert_eq!(p.stop, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(p.stop_token_ids, vec![4]);
    assert_eq!(p.logprobs, Some(3));
    assert!(p.ignore_eos && r.stream && r.include_usage && r.want_logprobs);
    assert_eq!((r.n, r.priority), (2, -3));
    assert_eq!(r.user.as_deref(), Some("team-a"));
}

#[test]
fn nulls_mean_absent() {
    let r = completions(
        json!({"prompt": "x", "max_tokens": null, "stop": null, "seed": null,
        "stream_options": null, "logprobs": null}),
    )
    .unwrap();
    assert_eq!(r.max_tokens, None);
    assert!(!r.want_logprobs);
}

#[test]
fn bad_inputs_name_their_param() {
    let cases = [
        (json!({"prompt": "x", "max_tokens": 0}), Some("max_tokens")),
        (json!({"prompt": "x", "max_tokens": -3}), Some("max_tokens")),
        (
            json!({"prompt": "x", "max_tokens": "5"}),
            Some("max_tokens"),
        ),
        (
            json!({"prompt": "x", "max_tokens": 1.5}),
            Some("max_tokens"),
        ),
        (
            json!({"prompt": "x", "temperature": -0.1}),
            Some("temperature"),
        ),
        (
            json!({"prompt": "x", "temperature": "hot"}),
            Some("temperature"),
        ),
        (
            json!({"prompt": "x", "temperature": 1e300}),
            Some("temperature"),
        ),
        (json!({"prompt": "x", "top_p": 0}), Some("top_p")),
        (json!({"prompt": "x", "top_p": 1.01}), Some("top_p")),
        (json!({"prompt": "x", "top_k": -2}), Some("top_k")),
        (json!({"prompt": "x", "min_p": 2}), Some("min_p")),
        (
            json!({"prompt": "x", "presence_penalty": 2.5}),
            Some("presence_penalty"),
        ),
        (
            json!({"prompt": "x", "frequency_penalty": -3}),
            Some("frequency_penalty"),
        ),
        (
            json!({"prompt": "x", "repetition_penalty": 0}),
            Some("repetition_penalty"),
        ),
        (json!({"prompt": "x", "n": 0}), Some("n")),
        (json!({"prompt": "x", "n": MAX_N + 1}), Some("n")),
        (json!({"prompt": "x", "logprobs": 21}), Some("logprobs")),
        (json!({"prompt": "x", "logprobs": -1}), Some("logprobs")),
        (json!({"prompt": "x", "logprobs": true}), Some("logprobs")),
        (json!({"prompt": "x", "stop": ""}), Some("stop")),
        (json!({"prompt": "x", "stop": ["a", ""]}), Some("stop")),
        (json!({"prompt": "x", "stop": 3}), Some("stop")),
        (
            json!({"prompt": "x", "stop": vec!["s"; MAX_STOP + 1]}),
            Some("stop"),
        ),
        (
            json!({"prompt": "x", "stop": "y".repeat(MAX_STOP_BYTES + 1)}),
            Some("stop"),
        ),
        (
            json!({"prompt": "x", "stop_token_ids": vec![4; MAX_STOP_TOKEN_IDS + 1]}),
            Some("stop_token_ids"),
        ),
        (
            json!({"prompt": "x", "seed": 18446744073709551616.0}),
            Some("seed"),
        ),
        (json!({"prompt": "x", "seed": -1e19}), Some("seed")),
        (json!({"prompt": "x", "seed": "1"}), Some("seed")),
        (
            json!({"prompt": "x", "stream_options": {"include_usage": true}}),
            Some("stream_options"),
        ),
        (
            json!({"prompt": "x", "stream": true, "stream_options": 1}),
            Some("stream_options"),
        ),
        (json!({"prompt": "x", "stream": "yes"}), Some("stream")),
        (json!({"prompt": "x", "model": 5}), Some("model")),
        (json!({"prompt": ""}), Some("prompt")),
        (json!({"prompt": []}), Some("prompt")),
        (json!({"prompt": [1, 512]}), Some("prompt")),
        (json!({"prompt": [1, -1]}), Some("prompt")),
        (json!({"prompt": [1, "a"]}), Some("prompt")),
        (json!({"prompt": 7}), Some("prompt")),
        (json!({"max_tokens": 1}), Some("prompt")),
        (json!({"prompt": ["a", "b"]}), None),
        (json!({"prompt": "x", "echo": true}), Some("echo")),
        (
            json!({"prompt": "x", "stop_token_ids": [9999]}),
            Some("stop_token_ids"),
        ),
        (json!([1, 2]), None),
        (json!({"prompt": "x", "user": 7}), Some("user")),
        (
            json!({"prompt": "x", "user": "u".repeat(257)}),
            Some("user"),
        ),
    ];
    for (body, param) in cases {
        let got = param_of(completions(body.clone()));
        assert_eq!(got.as_deref(), param, "{body}");
    }
}

#[test]
fn invalid_json_is_rejected() {
    let e = validate(b"{\"prompt\": ", Endpoint::Completions, LIMITS).unwrap_err();
    assert!(matches!(e, ValidationError::NotJson(_)));
    let e = validate(b"\xff\xfe", Endpoint::Completions, LIMITS).unwrap_err();
    assert!(matches!(e, ValidationError::NotJson(_)));
}

#[test]
fn a_batch_of_one_is_a_prompt() {
    let r = completions(json!({"prompt": ["hi"]})).unwrap();
    assert_eq!(r.input, Input::Prompt(Prompt::Text("hi".into())));
    let r = completions(json!({"prompt": [[5, 6]]})).unwrap();
    assert_eq!(r.input, Input::Prompt(Prompt::Ids(vec![5, 6])));
}

#[test]
fn chat_reads_messages_and_its_own_logprobs() {
    let r = chat(
        json!({"messages": [{"role": "user", "content": "hi"}], "logprobs": true,
        "top_logprobs": 2, "max_completion_tokens": 9, "max_tokens": 3}),
    )
    .unwrap();
    assert!(matches!(r.input, Input::Messages(ref m) if m.len() == 1));
    assert_eq!(r.params.logprobs, Some(2));
    assert_eq!(
        (r.max_tokens, r.max_tokens_param),
        (Some(9), "max_completion_tokens")
    );
    assert!(r.template.add_generation_prompt);

    let r =
        chat(json!({"messages": [{"role": "user", "content": "hi"}], "logprobs": true})).unwrap();
    assert_eq!(r.params.logprobs, Some(0));
}

#[test]
fn chat_errors_name_their_param() {
    let m = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({}), "messages"),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "user"}]}),
            "messages[0].content",
        ),
        (json!({"messages": m, "top_logprobs": 2}), "top_logprobs"),
        (
            json!({"messages": m, "logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (json!({"messages": m, "logprobs": 1}), "logprobs"),
        (
            json!({"messages": m, "max_completion_tokens": 0}),
            "max_completion_tokens",
        ),
    ];
    for (body, param) in cases {
        assert_eq!(
            param_of(chat(body.clone())).as_deref(),
            Some(param),
            "{body}"
        );
    }
}

#[test]
fn the_context_check_counts_prompt_and_completion() {
    assert!(check_context(200, 56, 256, Endpoint::Completions).is_ok());
    let e = check_context(200, 57, 256, Endpoint::Chat).unwrap_err();
    assert!(e.to_string().contains("maximum context length"), "{e}");
    assert_eq!(e.param().as_deref(), Some("messages"));
    let api: ApiError = e.into();
    assert_eq!(api.code, Some("context_length_exceeded"));
    assert!(check_context(1, usize::MAX, 256, Endpoint::Completions).is_err());
}

#[test]
fn template_inputs_are_checked() {
    let m = json!([{"role": "user", "content": "hi"}]);
    let r = chat(
        json!({"messages": m, "chat_template_kwargs": {"enable_thinking": false},
        "reasoning_effort": "low"}),
    )
    .unwrap();
    assert_eq!(r.template.kwargs["enable_thinking"], json!(false));
    assert_eq!(r.template.reasoning_effort.as_deref(), Some("low"));

    // Continuing the last message turns the generation prompt off unless asked for both.
    let r = chat(json!({"messages": m, "continue_final_message": true})).unwrap();
    assert!(r.template.continue_final_message && !r.template.add_generation_prompt);

    let cases = [
        (
            json!({"messages": m, "chat_template_kwargs": "x"}),
            "chat_template_kwargs",
        ),
        (
            json!({"messages": m, "chat_template_kwargs": [1]}),
            "chat_template_kwargs",
        ),
        (
            json!({"messages": m, "chat_template_kwargs": {"messages": []}}),
            "chat_template_kwargs.messages",
        ),
        (
            json!({"messages": m, "chat_template_kwargs": {"add_generation_prompt": false}}),
            "chat_template_kwargs.add_generation_prompt",
        ),
        (
            json!({"messages": m, "continue_final_message": true, "add_generation_prompt": true}),
            "continue_final_message",
        ),
        (
            json!({"messages": m, "continue_final_message": 1}),
            "continue_final_message",
        ),
        (
            json!({"messages": m, "reasoning_effort": 3}),
            "reasoning_effort",
        ),
    ];
    for (body, param) in cases {
        assert_eq!(
            param_of(chat(body.clone())).as_deref(),
            Some(param),
            "{body}"
        );
    }
    for reserved in RESERVED_TEMPLATE_VARS {
        let body = json!({"messages": m, "chat_template_kwargs": {*reserved: 1}});
        assert!(chat(body).is_err(), "{reserved}");
    }
}

#[test]
fn tokenize_and_detokenize_bodies() {
    let r = tokenize_request(br#"{"prompt": "hi", "return_token_strs": true}"#).unwrap();
    assert_eq!(r.input, TokenizeInput::Text("hi".into()));
    assert!(r.add_special_tokens && r.return_token_strs);
    let r = tokenize_request(
        br#"{"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": false}"#,
    )
    .unwrap();
    assert!(
        matches!(r.input, TokenizeInput::Messages(_, ref t) if !t.add_generation_prompt),
        "{r:?}"
    );
    assert!(!r.add_special_tokens);

    let param = |e: ValidationError| e.param();
    let bad = [
        (&br#"{}"#[..], Some("prompt")),
        (br#"{"prompt": [1, 2]}"#, Some("prompt")),
        (br#"{"prompt": "a", "messages": []}"#, Some("prompt")),
        (br#"{"messages": []}"#, Some("messages")),
        (
            br#"{"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": 1}"#,
            Some("chat_template_kwargs"),
        ),
        (
            br#"{"prompt": "a", "return_token_strs": "yes"}"#,
            Some("return_token_strs"),
        ),
        (br#"[1]"#, None),
    ];
    for (body, want) in bad {
        let e = tokenize_request(body).unwrap_err();
        assert_eq!(
            param(e).as_deref(),
            want,
            "{}",
            String::from_utf8_lossy(body)
        );
    }

    assert_eq!(
        detokenize_request(br#"{"tokens": [1, 511]}"#, LIMITS)
            .unwrap()
            .tokens,
        vec![1, 511]
    );
    for body in [
        &br#"{"tokens": [1, 512]}"#[..],
        br#"{"tokens": [-1]}"#,
        br#"{"tokens": "1"}"#,
        br#"{}"#,
    ] {
        let e = detokenize_request(body, LIMITS).unwrap_err();
        assert_eq!(param(e).as_deref(), Some("tokens"));
    }
}

#[test]
fn chat_tools_are_read_and_checked() {
    let tool = json!({"type": "function", "function": {"name": "f"}});
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let r = chat(json!({"messages": msgs, "tools": [tool]})).unwrap();
    let tools = r.tools.expect("tools");
    assert_eq!(tools.tools[0].name, "f");
    assert!(tools.parallel);
    assert_eq!(chat(json!({"messages": msgs})).unwrap().tools, None);
    // Completions take no tools (the field is ignored, as unknown fields are).
    let c = completions(json!({"prompt": "x", "tools": [tool]})).unwrap();
    assert_eq!(c.tools, None);

    let cases = [
        (
            json!({"messages": msgs, "tools": [{"type": "function"}]}),
            "tools[0].function",
        ),
        (
            json!({"messages": msgs, "tools": [tool], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "tool_choice",
        ),
        // A forced call is a constraint of its own: with a response_format too, it is refused.
        (
            json!({"messages": msgs, "tools": [tool], "tool_choice": "required",
                "response_format": {"type": "json_object"}}),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
    ];
    for (body, param) in cases {
        assert_eq!(
            param_of(chat(body.clone())).as_deref(),
            Some(param),
            "{body}"
        );
    }

    // `required` and a named function become the forced call's JSON-schema constraint.
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "f"}}),
    ] {
        let r = chat(json!({"messages": msgs, "tools": [tool], "tool_choice": choice})).unwrap();
        let c = r.constraint.expect("a forced call is constrained");
        assert_eq!(c.param, "tool_choice");
        assert!(
            matches!(
                c.spec,
                crate::device::sampling::grammar::ConstraintSpec::JsonSchema(_)
            ),
            "{:?}",
            c.spec
        );
    }
    let auto = chat(json!({"messages": msgs, "tools": [tool]})).unwrap();
    assert!(auto.constraint.is_none());
}

#[test]
fn earlier_call_arguments_reach_the_template_parsed() {
    let r = chat(json!({"messages": [
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": [1]}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"}
    ]}))
    .unwrap();
    let Input::Messages(m) = r.input else {
        panic!("chat input")
    };
    assert_eq!(
        m[0]["tool_calls"][0]["function"]["arguments"],
        json!({"x": [1]})
    );
    assert_eq!(m[1]["tool_call_id"], "call_1");
}

#[test]
fn structured_output_fields_become_one_constraint() {
    use crate::device::sampling::grammar::ConstraintSpec;
    let spec = |body: Value| {
        completions(body)
            .unwrap()
            .constraint
            .map(|c| (c.spec, c.param))
    };
    assert_eq!(spec(json!({"prompt": "x"})), None);
    assert_eq!(
        spec(json!({"prompt": "x", "response_format": {"type": "text"}})),
        None
    );
    assert_eq!(
        spec(json!({"prompt": "x", "response_format": {"type": "json_object"}})),
        Some((
            ConstraintSpec::JsonSchema(json!({"type": "object"})),
            "response_format"
        ))
    );
    assert_eq!(
        spec(json!({"prompt": "x", "guided_json": "{\"type\": \"array\"}"})),
        Some((
            ConstraintSpec::JsonSchema(json!({"type": "array"})),
            "guided_json"
        ))
    );
    assert_eq!(
        spec(json!({"prompt": "x", "guided_choice": ["a", "b"]})),
        Some((
            ConstraintSpec::Choice(vec!["a".into(), "b".into()]),
            "guided_choice"
        ))
    );
    assert_eq!(
        spec(json!({"prompt": "x", "structured_outputs": {"regex": "a+"}})),
        Some((ConstraintSpec::Regex("a+".into()), "structured_outputs"))
    );
    assert_eq!(
        spec(json!({"prompt": "x", "guided_grammar": "start: \"a\""})),
        Some((
            ConstraintSpec::Grammar("start: \"a\"".into()),
            "guided_grammar"
        ))
    );
    assert_eq!(
        param_of(completions(
            json!({"prompt": "x", "guided_regex": "a", "guided_choice": ["a"]})
        )),
        Some("guided_choice".into())
    );
}

#[test]
fn logit_bias_is_read_sorted_and_checked() {
    let r = chat(
        json!({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"9": -100, "3": 2.5}}),
    );
    assert_eq!(r.unwrap().params.logit_bias, vec![(3, 2.5), (9, -100.0)]);
    for bad in [
        json!({"512": 1}),
        json!({"-1": 1}),
        json!({"1": 100.5}),
        json!({"1": null}),
        json!("x"),
    ] {
        assert_eq!(
            param_of(completions(json!({"prompt": "x", "logit_bias": bad}))),
            Some("logit_bias".into()),
            "{bad}"
        );
    }
}
