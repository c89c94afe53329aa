using Rkt.Kvm.Images.Store;
using Spectre.Console;

namespace Rkt.Kvm.Stage0.CommandLine;

/// <summary>
/// Shows an import's progress: Spectre.Console bars when stderr is a terminal, otherwise one
/// plain line per step (layer), so logs and CI output stay readable.
/// </summary>
public static class ImportProgress
{
    public static T Run<T>(CommandContext context, Func<IImportProgress, T> import)
    {
        if (!context.StderrIsTerminal) return import(new PlainLines(context.Err));
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        return console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new TransferSpeedColumn())
            .Start(ctx => import(new Bars(ctx)));
    }

    private sealed class PlainLines(TextWriter err) : IImportProgress
    {
        public void Step(string description, long totalBytes) => err.WriteLine($"{description} ({Sizes.Format(totalBytes)})");
        public void Advance(long bytes) { }
    }

    private sealed class Bars(ProgressContext ctx) : IImportProgress
    {
        private ProgressTask? _task;

        public void Step(string description, long totalBytes)
        {
            _task?.StopTask();
            _task = ctx.AddTask(Markup.Escape(description), maxValue: Math.Max(1, totalBytes));
        }

        public void Advance(long bytes) => _task?.Increment(bytes);

        /// <summary>Its own bar, left running beside the others until it is full.</summary>
        public Action<long> Begin(string description, long totalBytes)
        {
            var task = ctx.AddTask(Markup.Escape(description), maxValue: Math.Max(1, totalBytes));
            return bytes => task.Increment(bytes);
        }
    }
}
