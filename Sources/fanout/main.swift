import FanoutStage
import SwitchyardCore

PipelineLoop.runStage(.fanout) { Fanout(context: $0) }
