import QuantDriftCommands

// Everything, error reporting included, lives in the QuantDriftCommands library (testable).
CommandLineTool.main()
