namespace Rkt.Kvm.Stage0.CommandLine;

/// <summary>Times as rkt lists them: "3 minutes ago".</summary>
public static class RelativeTime
{
    public static string Ago(DateTimeOffset then, DateTimeOffset now)
    {
        var d = now - then;
        if (d < TimeSpan.FromSeconds(1)) return "just now";
        (double value, string unit) = d.TotalSeconds < 60 ? (d.TotalSeconds, "second")
            : d.TotalMinutes < 60 ? (d.TotalMinutes, "minute")
            : d.TotalHours < 24 ? (d.TotalHours, "hour")
            : d.TotalDays < 365 ? (d.TotalDays, "day")
            : (d.TotalDays / 365, "year");
        int n = (int)value;
        return $"{n} {unit}{(n == 1 ? "" : "s")} ago";
    }
}
