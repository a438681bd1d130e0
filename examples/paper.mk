# Shared recipe of the paper reproductions (included by examples/<dataset>/Makefile).
#
#   make -C examples/cub DATA=/data/CUB_200_2011
#
# Steps: class list -> MCQs (LaViD) and ranked yes/no aspects (MaKD) -> language-teacher targets
# (LaViD), multimodal per-image targets (MaKD, CUDA) -> students x seeds for ce, makd, lavid ->
# results.md beside the paper's numbers. Every step is a file target, so an interrupted run resumes.
# The papers' settings are the defaults; override any variable on the command line.
MAKD ?= ../../.venv/bin/makd
WORK ?= work
DATA ?= $(error set DATA=/path/to/your copy of $(DATASET) (its native layout, see `makd data info $(DATASET):PATH`))
SPEC = $(DATASET):$(DATA)

# Question writer: the papers used GPT-4o. Point GEN_BACKEND=openai GEN_API_BASE=... GEN_LLM=gpt-4o at an
# API, or GEN_LLM=/models/qwen2.5-7b-instruct-q4_k_m.gguf for a local 7B model.
GEN_LLM ?= smollm2-135m
GEN_BACKEND ?= llama.cpp
GEN_API_BASE ?=
GEN_FLAGS = --llm $(GEN_LLM) --backend $(GEN_BACKEND) $(if $(GEN_API_BASE),--api-base $(GEN_API_BASE))
# LaViD's language teacher (the paper: Qwen2.5-7B) and MaKD's multimodal teacher (the paper: InternVL2-8B).
TEACHER_LLM ?= smollm2-135m
MLLM ?= internvl3-8b
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
TRAIN = $(MAKD) train --data $(SPEC) --epochs $(EPOCHS) --device $(DEVICE)
resume_flag = $(if $(wildcard $(dir $(1))last.pt),--resume)
RUNS = $(METHODS) $(CONTROLS)
RUN_DONE = $(foreach s,$(STUDENTS),$(foreach m,$(RUNS),$(foreach k,$(SEEDS),$(WORK)/runs/$(s)/$(m)/seed$(k)/done)))

.PHONY: all results clean
all: results

$(WORK)/classes.txt:
	@mkdir -p $(WORK)
	$(MAKD) data classes $(SPEC) -o $@

$(WORK)/mcq.jsonl: $(WORK)/classes.txt
	$(MAKD) gen-questions $(GEN_FLAGS) --classes $< --kind mcq -n $(N_MCQ) --options $(OPTIONS) -o $@

$(WORK)/aspects.jsonl: $(WORK)/classes.txt
	$(MAKD) gen-questions $(GEN_FLAGS) --classes $< --kind yesno -n $(N_ASPECTS) --select $(Q_ASPECTS) -o $@

$(WORK)/lavid_targets.h5: $(WORK)/mcq.jsonl $(WORK)/classes.txt
	$(MAKD) extract --llm $(TEACHER_LLM) --questions $< --classes $(WORK)/classes.txt -o $@

$(WORK)/makd_targets.h5: $(WORK)/aspects.jsonl
	$(MAKD) extract --mllm $(MLLM) --data $(SPEC) --questions $< --device $(DEVICE) -o $@

$(WORK)/runs/%/done:
	$(eval parts := $(subst /, ,$*))
	$(eval student := $(word 1,$(parts)))
	$(eval method := $(word 1,$(subst ., ,$(word 2,$(parts)))))
	$(eval control := $(word 2,$(subst ., ,$(word 2,$(parts)))))
	$(eval seed := $(patsubst seed%,%,$(word 3,$(parts))))
	$(if $(filter makd,$(method)),$(MAKE) $(WORK)/makd_targets.h5)
	$(if $(filter lavid,$(method)),$(MAKE) $(WORK)/lavid_targets.h5)
	$(TRAIN) --student $(student) --method $(method) --seed $(seed) -o $(dir $@) \
	  $(if $(filter makd,$(method)),--targets $(WORK)/makd_targets.h5 --aux-weight $(ALPHA)) \
	  $(if $(filter lavid,$(method)),--targets $(WORK)/lavid_targets.h5 --aux-weight $(LAMBDA)) \
	  $(if $(control),--control $(control)) $(call resume_flag,$@)
	@touch $@

$(WORK)/results.md: $(RUN_DONE)
	{ echo "# $(DATASET): makd reproduction"; echo; \
	  $(MAKD) eval $(foreach s,$(STUDENTS),$(foreach m,$(RUNS),$(WORK)/runs/$(s)/$(m)/seed*/best.pt)) --format markdown; \
	  echo; echo "## The papers' numbers (top-1 %, mean of 3 runs; shared/reference/paper-numbers.md)"; echo; \
	  echo "$(PAPER_NUMBERS)"; } > $@.tmp && mv $@.tmp $@

results: $(WORK)/results.md
	@cat $<

clean:
	rm -rf $(WORK)
