# Shared recipe of the paper reproductions (included by examples/<dataset>/Makefile).
#
#   make -C examples/cub DATA=/data/CUB_200_2011                        # the papers' teachers, on a GPU
#   make -C examples/cub DATA=/data/CUB_200_2011 PUBLISHED=/src/lavid   # LaViD's published questions and targets
#
# Steps: class list -> MCQs (LaViD) and ranked yes/no aspects (MaKD) -> language-teacher targets
# (LaViD), multimodal per-image targets (MaKD, CUDA) -> students x seeds x checkpoint protocols for
# ce, makd, lavid and the controls -> results.md: makd's numbers under the honest protocol and the
# papers' side by side, beside the paper's. Every step is a file target, so an interrupted run resumes.
# The papers' settings are the defaults; override any variable on the command line.
MAKD ?= ../../.venv/bin/makd
WORK ?= work
DATA ?= $(error set DATA=/path/to/your copy of $(DATASET) (its native layout, see `makd data info $(DATASET):PATH`))
SPEC = $(DATASET):$(DATA)

# Question writer: the papers used GPT-4o (GEN_BACKEND=openai GEN_API_BASE=... GEN_LLM=gpt-4o for an API).
# The default is the papers' local teacher, Qwen2.5-7B-Instruct through transformers (bf16 on a GPU).
GEN_LLM ?= Qwen/Qwen2.5-7B-Instruct
GEN_BACKEND ?= hf
GEN_API_BASE ?=
GEN_FLAGS = --llm $(GEN_LLM) --backend $(GEN_BACKEND) $(if $(GEN_API_BASE),--api-base $(GEN_API_BASE))
# LaViD's language teacher: Qwen2.5-7B-Instruct, asked with the reference's prompt (docs/reproducing.md).
# A local GGUF instead: TEACHER_LLM=/models/qwen2.5-7b-instruct-q4_k_m.gguf TEACHER_BACKEND=llama.cpp.
TEACHER_LLM ?= Qwen/Qwen2.5-7B-Instruct
TEACHER_BACKEND ?= hf
TEACHER_API_BASE ?=
LAVID_LAYOUT ?= lavid-reference
TEACHER_FLAGS = --llm $(TEACHER_LLM) --backend $(TEACHER_BACKEND) $(if $(TEACHER_API_BASE),--api-base $(TEACHER_API_BASE)) \
  --prompt-layout $(LAVID_LAYOUT)
# MaKD's multimodal teacher: InternVL2-8B (its original checkpoint runs its own code, on a GPU), asked
# with MaKD's reference prompt.
MLLM ?= internvl2-8b
MLLM_FLAGS ?= --trust-remote-code --prompt-layout makd-reference
# PUBLISHED=/path/to/a clone of github.com/lliangthomas/lavid: LaViD's GPT-4o questions and its
# teacher's targets (questions/$(LAVID_NAME)/...) are imported instead of generated and extracted.
PUBLISHED ?=
LAVID_NAME ?= $(DATASET)
PUBLISHED_QUESTIONS ?= chat_50-5
PUBLISHED_TEACHER ?= qwen2.5-7b_chat_50-5
# MaKD publishes no question sets: MAKD_QUESTIONS=FILE.txt (one yes/no question per line) imports yours.
MAKD_QUESTIONS ?=
# Classes LaViD's targets are written for (Waterbirds: CUB's species) and LaViD names makd's do not match.
LAVID_CLASSES_SPEC ?= $(SPEC)
CLASS_MAP_JSON ?=
N_MCQ ?= 50
OPTIONS ?= 5
N_ASPECTS ?= 100
Q_ASPECTS ?= 50
STUDENTS ?= resnet18
SEEDS ?= 0 1 2
EPOCHS ?= 240
LAMBDA ?= 40
ALPHA ?= 4
DEVICE ?= auto
METHODS ?= ce makd lavid
# Controls (same head and loss, targets without the teacher's knowledge): METHOD.CONTROL run names.
CONTROLS ?= lavid.random-codes lavid.shuffled makd.gaussian makd.shuffled
# Checkpoint protocols, side by side in results.md: val (makd's: best validation top-1 on 10 % held out
# of the training images) and the paper's, which chooses on the test split and trains on every training
# image as the reference code does (LaViD: test-loss, the lowest test CE every 5 epochs; MaKD: test-acc).
PAPER_PROTOCOL ?= test-loss
PROTOCOLS ?= val $(PAPER_PROTOCOL)
protocol_flags = $(if $(filter val,$(1)),,--select-by $(1) --val-fraction 0)
TRAIN = $(MAKD) train --data $(SPEC) --epochs $(EPOCHS) --device $(DEVICE)
resume_flag = $(if $(wildcard $(dir $(1))last.pt),--resume)
RUNS = $(METHODS) $(CONTROLS)
RUN_DONE = $(foreach s,$(STUDENTS),$(foreach m,$(RUNS),$(foreach p,$(PROTOCOLS),$(foreach k,$(SEEDS),$(WORK)/runs/$(s)/$(m)/$(p)/seed$(k)/done))))
# The paper's figure per run (PAPER_<run> in the dataset's Makefile), on the same row of results.md.
PAPER_FLAGS = $(foreach r,$(RUNS),$(if $(PAPER_$(r)),--paper "$(r)=$(PAPER_$(r))"))
published_file = $(if $(wildcard $(1)),$(1),$(error PUBLISHED: $(1) does not exist; LaViD publishes $(2) for cub200, stanfordcars, oxfordpets, flowers, fgvc_aircraft, caltech101 and waterbird))

.PHONY: all results report clean FORCE
all: results report
FORCE:

$(WORK)/classes.txt:
	@mkdir -p $(WORK)
	$(MAKD) data classes $(SPEC) -o $@

$(WORK)/lavid_classes.txt:
	@mkdir -p $(WORK)
	$(MAKD) data classes $(LAVID_CLASSES_SPEC) -o $@

# Rewritten only when CLASS_MAP_JSON changes, so a corrected map re-runs the import and an unchanged one does not.
$(WORK)/class_map.json: FORCE
	@mkdir -p $(WORK)
	echo '$(or $(CLASS_MAP_JSON),{})' > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

ifneq ($(PUBLISHED),)
$(WORK)/mcq.jsonl:
	@mkdir -p $(WORK)
	$(MAKD) import questions $(call published_file,$(PUBLISHED)/questions/$(LAVID_NAME)/$(PUBLISHED_QUESTIONS).txt,questions) \
	  --from lavid -o $@

$(WORK)/lavid_targets.h5: $(WORK)/mcq.jsonl $(WORK)/lavid_classes.txt $(WORK)/class_map.json
	$(MAKD) import targets $(call published_file,$(PUBLISHED)/questions/$(LAVID_NAME)/logits/$(PUBLISHED_TEACHER).json,targets) \
	  --from lavid --classes $(WORK)/lavid_classes.txt --questions $< --class-map $(WORK)/class_map.json -o $@
else
$(WORK)/mcq.jsonl: $(WORK)/lavid_classes.txt
	$(MAKD) gen-questions $(GEN_FLAGS) --classes $< --kind mcq -n $(N_MCQ) --options $(OPTIONS) -o $@

$(WORK)/lavid_targets.h5: $(WORK)/mcq.jsonl $(WORK)/lavid_classes.txt
	$(MAKD) extract $(TEACHER_FLAGS) --questions $< --classes $(WORK)/lavid_classes.txt -o $@
endif

ifneq ($(MAKD_QUESTIONS),)
$(WORK)/aspects.jsonl:
	@mkdir -p $(WORK)
	$(MAKD) import questions $(MAKD_QUESTIONS) --from makd -o $@
else
$(WORK)/aspects.jsonl: $(WORK)/classes.txt
	$(MAKD) gen-questions $(GEN_FLAGS) --classes $< --kind yesno -n $(N_ASPECTS) --select $(Q_ASPECTS) -o $@
endif

$(WORK)/makd_targets.h5: $(WORK)/aspects.jsonl
	$(MAKD) extract --mllm $(MLLM) $(MLLM_FLAGS) --data $(SPEC) --questions $< --device $(DEVICE) -o $@

# WORK/runs/STUDENT/RUN/PROTOCOL/seedK: RUN is a method or METHOD.CONTROL, PROTOCOL a --select-by value.
$(WORK)/runs/%/done:
	$(eval parts := $(subst /, ,$*))
	$(eval student := $(word 1,$(parts)))
	$(eval method := $(word 1,$(subst ., ,$(word 2,$(parts)))))
	$(eval control := $(word 2,$(subst ., ,$(word 2,$(parts)))))
	$(eval protocol := $(word 3,$(parts)))
	$(eval seed := $(patsubst seed%,%,$(word 4,$(parts))))
	$(if $(filter makd,$(method)),$(MAKE) $(WORK)/makd_targets.h5)
	$(if $(filter lavid,$(method)),$(MAKE) $(WORK)/lavid_targets.h5)
	$(TRAIN) --student $(student) --method $(method) --seed $(seed) -o $(dir $@) $(call protocol_flags,$(protocol)) \
	  $(if $(filter makd,$(method)),--targets $(WORK)/makd_targets.h5 --aux-weight $(ALPHA)) \
	  $(if $(filter lavid,$(method)),--targets $(WORK)/lavid_targets.h5 --aux-weight $(LAMBDA)) \
	  $(if $(control),--control $(control)) $(call resume_flag,$@)
	@touch $@

$(WORK)/results.md: $(RUN_DONE)
	{ echo "# $(DATASET): makd reproduction"; echo; \
	  echo "Test top-1 % (and worst-group where the dataset has groups) of $(STUDENTS), seeds $(SEEDS), $(EPOCHS) epochs;"; \
	  echo "questions: $(if $(PUBLISHED),LaViD's published $(PUBLISHED_QUESTIONS),$(GEN_LLM)); LaViD teacher: $(if $(PUBLISHED),LaViD's published $(PUBLISHED_TEACHER),$(TEACHER_LLM)); MaKD teacher: $(MLLM)."; echo; \
	  $(MAKD) eval $(foreach s,$(STUDENTS),$(foreach m,$(RUNS),$(foreach p,$(PROTOCOLS),$(WORK)/runs/$(s)/$(m)/$(p)))) --side-by-side $(PAPER_FLAGS); \
	  echo; echo "## The papers' numbers (top-1 %, mean of 3 runs; shared/reference/paper-numbers.md)"; echo; \
	  echo "$(PAPER_NUMBERS)"; } > $@.tmp && mv $@.tmp $@

results: $(WORK)/results.md
	@cat $<

# One page with the same table, both protocols beside the paper's numbers, curves, per-class accuracy and the targets' views.
$(WORK)/report.html: $(WORK)/results.md
	$(MAKD) report $(foreach s,$(STUDENTS),$(foreach m,$(RUNS),$(foreach p,$(PROTOCOLS),$(WORK)/runs/$(s)/$(m)/$(p)))) $(PAPER_FLAGS) -o $@

report: $(WORK)/report.html
	@echo "Report: $(WORK)/report.html"

clean:
	rm -rf $(WORK)
