"""Golden renderings of chat templates for the C# Jinja subset (src/Serving/Jinja.cs), made with jinja2 set up as
transformers sets it up for apply_chat_template (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
loopcontrols, raise_exception, its tojson). Runs anywhere jinja2 is installed (Debian: python3-jinja2):

    python3 tools/oracle/chat_templates.py tests/fixtures/chat/templates.json

The real templates are transcribed from the tokenizer_config.json files of the public checkpoints named; "features"
is ours and touches every construct the C# side supports.
"""
import json, sys
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.exceptions import TemplateError

LLAMA2 = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
MISTRAL = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
LLAMA3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
ZEPHYR = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
FEATURES = """{#- every construct the C# subset knows -#}
{%- set ns = namespace(system='', count=0) -%}
{%- for m in messages if m.role != 'tool' -%}
  {%- if m['role'] == 'system' -%}{%- set ns.system = m.content | trim -%}
  {%- elif m.role in ['user', 'assistant'] -%}
    {%- set ns.count = ns.count + 1 -%}
    {{ loop.index }}/{{ loop.length }}{{ ' first' if loop.first }}{{ ' last' if loop.last else '' }} {{ m.role | upper }}: {{ m.content | replace('  ', ' ') }}
    {% if m.content is string and m.content.startswith('Q') %}  (question {{ m.content[1:4] ~ '…' }}, {{ m.content | length }} chars, {{ m.content.split() | length }} words)
    {% endif -%}
  {%- endif -%}
{%- else -%}
no messages
{%- endfor -%}
{{- ns.count }} turns{% if ns.system %}, system {{ ns.system | tojson }}{% endif %}
{{ messages | length - 1 }} {{ 7 // 2 }} {{ 7 % 3 }} {{ -3 + 10 * 2 }} {{ 1.5 * 2 }} {{ [1, 2] + [3] }} {{ none }} {{ true and not false }} {{ undefined_name | default('dflt') }} {{ messages[-1]['role'] }}
{% for k, v in {'a': 1, 'b': [2, 'x']}.items() %}{{ k }}={{ v | tojson }}{{ ',' if not loop.last }}{% endfor %} {{ range(3) | list }} {{ 'abc'[:2] if false else 'abc'[1:] }} {{ messages | selectattr_free if false else 'ok' }}
{%- if add_generation_prompt %}
ASSISTANT:{% endif %}"""

TEMPLATES = [
    ("llama-2-chat (meta-llama/Llama-2-7b-chat-hf)", LLAMA2, "<s>", "</s>"),
    ("mistral-instruct (mistralai/Mistral-7B-Instruct-v0.1)", MISTRAL, "<s>", "</s>"),
    ("llama-3-instruct (meta-llama/Meta-Llama-3-8B-Instruct)", LLAMA3, "<|begin_of_text|>", "<|end_of_text|>"),
    ("zephyr (HuggingFaceH4/zephyr-7b-beta)", ZEPHYR, "<s>", "</s>"),
    ("chatml", CHATML, "<s>", "<|im_end|>"),
    ("features (ours)", FEATURES.replace(" {{ messages | selectattr_free if false else 'ok' }}", ""), "<s>", "</s>"),
]

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "  Be brief.  "}, {"role": "user", "content": "Q: What is 2 + 2?"}],
    [{"role": "user", "content": "Q: What is 2 + 2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "And  3 + 3? \"quoted\" ü"}],
    [{"role": "system", "content": "You are a pirate.\nArr."}, {"role": "user", "content": " hi "}, {"role": "assistant", "content": " Ahoy! "}, {"role": "user", "content": "Where?"}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    [{"role": "assistant", "content": "first"}],
]


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def main(out):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    result = []
    for name, source, bos, eos in TEMPLATES:
        t = env.from_string(source)
        cases = []
        for messages in CONVERSATIONS:
            for gen in (False, True):
                case = {"messages": messages, "add_generation_prompt": gen}
                try:
                    case["output"] = t.render(messages=messages, bos_token=bos, eos_token=eos, add_generation_prompt=gen)
                except TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)
        result.append({"name": name, "template": source, "bos_token": bos, "eos_token": eos, "cases": cases})
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)
    print(f"wrote {out}: {len(result)} templates, {sum(len(r['cases']) for r in result)} cases")


if __name__ == "__main__":
    main(sys.argv[1])
