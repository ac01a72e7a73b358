import CacheStage
import SwitchyardCore

PipelineLoop.runStage(.cache) { Cache(context: $0) }
