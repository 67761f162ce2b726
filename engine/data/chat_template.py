"""A Jinja chat template that renders harmony for inference servers (vLLM, SGLang, transformers).

Written for osstune's exports: the generated system message (identity, knowledge cutoff, optional
date, reasoning effort, channels), the dataset-style system/developer text as the developer
message's `# Instructions`, user turns, assistant turns (`thinking` -> analysis channel, kept only
for the turn being continued), tool calls (`<|constrain|>json`, ended by `<|call|>`) and tool
results. Tool schemas are listed with their JSON schema rather than harmony's TypeScript form.
"""

CHAT_TEMPLATE = r"""{%- set effort = reasoning_effort | default('medium') -%}
{%- set sys = (model_identity
    | default('You are ChatGPT, a large language model trained by OpenAI.'))
    ~ '\nKnowledge cutoff: 2024-06' -%}
{%- if conversation_start_date is defined and conversation_start_date -%}
{%- set sys = sys ~ '\nCurrent date: ' ~ conversation_start_date -%}
{%- endif -%}
{%- set sys = sys ~ '\n\nReasoning: ' ~ effort
    ~ '\n\n# Valid channels: analysis, commentary, final.'
    ~ ' Channel must be included for every message.' -%}
{%- if tools -%}
{%- set sys = sys ~ "\nCalls to these tools must go to the commentary channel: 'functions'." -%}
{%- endif -%}
<|start|>system<|message|>{{ sys }}<|end|>
{%- set ns = namespace(instructions=none, last_user=-1) -%}
{%- for m in messages -%}
{%- if m.role in ['system', 'developer'] -%}{%- set ns.instructions = m.content -%}{%- endif -%}
{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- if ns.instructions is not none or tools -%}
{%- set d = namespace(text='') -%}
{%- if ns.instructions is not none -%}
{%- set d.text = '# Instructions\n\n' ~ ns.instructions -%}
{%- endif -%}
{%- if tools -%}
{%- if d.text -%}{%- set d.text = d.text ~ '\n\n' -%}{%- endif -%}
{%- set d.text = d.text ~ '# Tools\n\n## functions\n\nnamespace functions {\n' -%}
{%- for t in tools -%}{%- set f = t.function if t.function is defined else t -%}
{%- if f.description is defined and f.description -%}
{%- set d.text = d.text ~ '\n// ' ~ f.description -%}
{%- endif -%}
{%- set d.text = d.text ~ '\ntype ' ~ f.name ~ ' = (_: '
    ~ (f.parameters | default({}) | tojson) ~ ') => any;\n' -%}
{%- endfor -%}
{%- set d.text = d.text ~ '\n} // namespace functions' -%}
{%- endif -%}
<|start|>developer<|message|>{{ d.text }}<|end|>
{%- endif -%}
{%- for m in messages -%}
{%- if m.role == 'user' -%}
<|start|>user<|message|>{{ m.content }}<|end|>
{%- elif m.role == 'assistant' -%}
{%- set thinking = m.thinking if m.thinking is defined and m.thinking
    else (m.reasoning_content if m.reasoning_content is defined and m.reasoning_content
    else none) -%}
{%- if thinking and (loop.index0 > ns.last_user) -%}
<|start|>assistant<|channel|>analysis<|message|>{{ thinking }}<|end|>
{%- endif -%}
{%- if m.tool_calls is defined and m.tool_calls -%}
{%- for call in m.tool_calls -%}{%- set c = call.function if call.function is defined else call -%}
<|start|>assistant to=functions.{{ c.name }}<|channel|>commentary <|constrain|>json<|message|>
{{- c.arguments if c.arguments is string else (c.arguments | tojson) }}<|call|>
{%- endfor -%}
{%- else -%}
<|start|>assistant<|channel|>final<|message|>{{ m.content or '' }}<|end|>
{%- endif -%}
{%- elif m.role == 'tool' -%}
<|start|>functions.{{ m.name | default('tool') }} to=assistant<|channel|>commentary<|message|>
{{- m.content }}<|end|>
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}"""
